"""Connection-level tricks: waiting for a client to go away, and dropping a TCP connection.

Litestar/ASGI gives no portable way to abort a response, so ``abort_connection`` reaches
for the server transport behind uvicorn's ASGI ``receive`` callable and closes it. That
makes the client see a genuinely broken stream (incomplete chunked body / no response at
all) instead of a tidy error. When the transport is not reachable (another ASGI server)
it falls back to raising :class:`ConnectionAborted`, which makes any ASGI server close the
connection too, at the cost of an error line in the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from litestar import Request


class ConnectionAborted(Exception):
    """Raised to force the ASGI server to drop the connection (fallback path)."""


def _transport(request: Request[Any, Any, Any]) -> Any:
    """Return uvicorn's asyncio transport for this request, or None if unavailable."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if transport is not None and hasattr(transport, "close") else None


async def wait_for_disconnect(request: Request[Any, Any, Any], timeout: float | None) -> bool:
    """Block until the client disconnects (True) or ``timeout`` seconds pass (False).

    Must only be called once the request body has been fully read: from then on the ASGI
    ``receive`` callable only returns when the client goes away.
    """

    async def _wait() -> None:
        while True:
            message = await request.receive()
            if message.get("type") == "http.disconnect":
                return

    try:
        await asyncio.wait_for(_wait(), timeout)
    except TimeoutError:
        return False
    return True


async def abort_connection(request: Request[Any, Any, Any]) -> None:
    """Close the client connection abruptly, flushing bytes already written."""
    transport = _transport(request)
    if transport is None:
        raise ConnectionAborted("simulated connection cut")
    # close() (not abort()) so tokens already queued reach the client before the FIN.
    transport.close()
    # Let uvicorn notice the loss so it neither writes a 500 nor logs "returned without
    # completing response"; the disconnect arrives via receive() within a loop tick or two.
    with contextlib.suppress(Exception):
        await wait_for_disconnect(request, 1.0)
