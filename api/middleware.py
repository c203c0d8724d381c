"""ASGI middleware: request ids and the one log line per request."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from loguru import logger

from jobs import metrics

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Paths polled by orchestrators; logged at DEBUG so they don't drown real traffic.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


def add_response_header(connection: ASGIConnection[Any, Any, Any, Any], name: str, value: str) -> None:
    """A header for the response, whatever its status or whoever builds it (this middleware adds it)."""
    state = connection.scope.setdefault("state", {})
    state.setdefault("response_headers", {})[name] = value


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Give every request an id (or keep a sane `X-Request-ID`), echo it, and bind it to logs."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        incoming = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if _VALID_ID.match(incoming) else "req_" + secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                extra += [(k.lower().encode(), v.encode())
                          for k, v in scope["state"].get("response_headers", {}).items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        with logger.contextualize(request_id=request_id):
            try:
                await app(scope, receive, send_with_id)
            finally:
                path: Any = scope.get("path", "")
                method = scope.get("method", "WS")
                elapsed = time.perf_counter() - started
                level = "DEBUG" if path in _QUIET else "INFO"
                logger.log(level, "{} {} {} {:.1f}ms", method, path, status, elapsed * 1000)
                # Label by route template, never the raw path: ids would explode the series count.
                route = scope.get("path_template") or "unmatched"
                metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
                metrics.HTTP_LATENCY.labels(method=method, route=route).observe(elapsed)

    return middleware
