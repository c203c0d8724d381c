"""A stream's text deltas, published in order, coalescing what arrives while a publish is in flight.

The provider's stream is never held up by publishing: `add` hands the text to
one sender task per stream and returns. The sender publishes what is waiting
as one `delta` event, and whatever arrived meanwhile as the next one. At low
load every token is its own event, as before (nothing waits for a timer); when
the event loop or Redis falls behind — hundreds of streams on one loop — the
events grow instead of the backlog, so a worker spends its CPU per event, not
per token (`scripts/bench/streams.py`, ADR 0007).

A failed publish is our side's failure, not the provider's: the next `add`
raises it (the adapters turn that into `OwnSideFailure`), and so does `check`
after the stream ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Deltas:
    """One stream's delta publisher."""

    def __init__(self, publish: Callable[[str], Awaitable[None]]) -> None:
        self._publish = publish
        self._waiting: list[str] = []
        self._sender: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    async def add(self, text: str) -> None:
        """Publish `text` after everything added before it (raises an earlier publish's failure)."""
        self.check()
        self._waiting.append(text)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self._waiting and self._failure is None:
            text, self._waiting = "".join(self._waiting), []
            try:
                await self._publish(text)
            except Exception as exc:  # kept for `add` / `check`: our side failed, the stream must stop
                self._failure = exc

    async def drain(self) -> None:
        """Until everything added is published (or publishing failed): before a `reset` or the ending."""
        if self._sender is not None:
            await self._sender

    def check(self) -> None:
        """Raise the failure of a publish, if one failed."""
        if self._failure is not None:
            raise self._failure
