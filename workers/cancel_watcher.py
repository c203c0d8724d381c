"""The cancel watcher: stops running jobs on request, within a second, from any API process.

The API marks the job `cancelled` (a conditional UPDATE, so the worker's
later `finish` matches nothing), publishes the `cancelled` event, and
PUBLISHes the job id on `sy:cancel`. Every worker process listens there and
cancels the asyncio task running that job, which closes the provider stream.
Recently cancelled ids are remembered briefly, covering a cancel that lands
between a worker's claim and its task registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from uuid import UUID

from loguru import logger
from redis.asyncio import Redis

from jobs.events import CANCEL_CHANNEL

_REMEMBER_SECONDS = 120.0


class CancelWatcher:
    """Maps running job ids to their tasks and cancels them on request."""

    def __init__(self) -> None:
        self.running: dict[UUID, asyncio.Task[object]] = {}
        self.cancelled: dict[UUID, float] = {}
        self._listener: asyncio.Task[None] | None = None

    def start(self, redis: Redis) -> None:
        """Start listening (once per process)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(redis))

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    def was_cancelled(self, job_id: UUID) -> bool:
        """Whether a cancel for this job was received."""
        return job_id in self.cancelled

    def register(self, job_id: UUID, task: asyncio.Task[object]) -> None:
        """Track a running job; cancel at once if its cancel already arrived."""
        self.running[job_id] = task
        if job_id in self.cancelled:
            task.cancel()

    def unregister(self, job_id: UUID) -> None:
        """Forget a job that finished."""
        self.running.pop(job_id, None)

    def _on_cancel(self, job_id: UUID) -> None:
        now = time.monotonic()
        self.cancelled[job_id] = now
        for old in [k for k, at in self.cancelled.items() if now - at > _REMEMBER_SECONDS]:
            del self.cancelled[old]
        task = self.running.get(job_id)
        if task is not None:
            logger.bind(job_id=str(job_id)).info("cancelling the running job")
            task.cancel()

    async def _listen(self, redis: Redis) -> None:
        while True:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message and message.get("type") == "message":
                            with contextlib.suppress(ValueError):
                                self._on_cancel(UUID(message["data"].decode()))
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis restarted or the connection dropped: resubscribe after a pause.
                logger.opt(exception=True).warning("cancel listener lost its connection; reconnecting")
                await asyncio.sleep(1)
