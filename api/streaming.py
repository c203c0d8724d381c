"""Exactly-once, in-order event delivery to one subscriber.

The recipe (DESIGN.md, "Events and streaming"): subscribe to the live channel
first, then read the replay stream after the client's last seen `seq`, then
go live, dropping anything at or below the last delivered `seq`. Pub/sub is
best-effort (a reconnect or a lost race can drop a message), so a live event
that skips ahead fills the gap from the replay stream, and a quiet channel is
polled: the stream, not pub/sub, is the source of truth.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber
from psycopg_pool import PoolTimeout

from api.state import Services
from jobs import store
from jobs.events import Event, event_decoder, job_channel, now_iso, user_channel
from jobs.states import TERMINAL_EVENTS, TERMINAL_STATUSES

#: Idle polls between checks of the job row (catches a terminal event that was never published).
_ROW_CHECK_EVERY = 5


class TimedSubscriber(Subscriber):
    """A channels subscriber whose next event can be awaited with a timeout."""

    async def next_event(self, timeout: float) -> bytes | None:
        """The next raw message, or None after `timeout` seconds of silence."""
        # Not `asyncio.wait_for`: before Python 3.12 it wraps the get in a new Task per call, and
        # thousands of those, each alive until the next token, cost more than the sends (and,
        # surviving young collections, made the garbage collector walk the whole heap).
        queue = self._queue
        if queue.empty():
            try:
                async with asyncio.timeout(timeout):
                    item = await queue.get()
            except TimeoutError:
                return None
        else:
            item = queue.get_nowait()
        queue.task_done()
        return item


def _synthetic_end(row: store.JobRow, seq: int) -> Event:
    """A terminal event rebuilt from the row, for jobs whose replay stream expired."""
    return Event(seq=seq, type=row.status, job_id=str(row.id), at=now_iso(),
                 data={"replay_expired": True, "result": row.result, "error": row.error})


async def job_events(services: Services, channels: ChannelsPlugin, job: store.JobRow,
                     after: int = 0) -> AsyncIterator[Event]:
    """Every event of `job` with `seq > after`, each once and in order, ending with the terminal one."""
    idle = services.settings.stream_idle_poll_seconds
    last = after
    async with channels.start_subscription([job_channel(job.id)]) as subscriber:
        assert isinstance(subscriber, TimedSubscriber)
        backlog = await services.events.replay(job.id, after)
        if not backlog and job.status in TERMINAL_STATUSES:
            yield _synthetic_end(job, after + 1)
            return
        quiet_polls = 0
        while True:
            for event in backlog:
                if event.seq <= last:
                    continue
                yield event
                last = event.seq
                if event.type in TERMINAL_EVENTS:
                    return
            raw = await subscriber.next_event(idle)
            if raw is None:
                backlog = await services.events.replay(job.id, last)
                quiet_polls = 0 if backlog else quiet_polls + 1
                if quiet_polls >= _ROW_CHECK_EVERY:
                    quiet_polls = 0
                    try:
                        fresh = await store.get_job(services.pool, job.id, None)
                    except PoolTimeout:
                        # A safety net, not the stream: thousands of quiet subscribers can drain
                        # the pool at once; check again at the next round instead of failing the socket.
                        continue
                    if fresh is not None and fresh.status in TERMINAL_STATUSES:
                        # Finished, but its terminal event is not in the stream: say so once.
                        backlog = await services.events.replay(job.id, last) or [_synthetic_end(fresh, last + 1)]
                continue
            event = event_decoder.decode(raw)
            if event.seq > last + 1:
                backlog = [*await services.events.replay(job.id, last, event.seq - 1), event]
            else:
                backlog = [event]


async def owner_events(channels: ChannelsPlugin, owner_id: UUID) -> AsyncIterator[Event]:
    """Live events of all of an owner's jobs, each once (duplicates dropped per job by `seq`)."""
    last: dict[str, int] = {}
    async with channels.start_subscription([user_channel(owner_id)]) as subscriber:
        assert isinstance(subscriber, TimedSubscriber)
        async for raw in subscriber.iter_events():
            event = event_decoder.decode(raw)
            if event.seq <= last.get(event.job_id, 0):
                continue
            last[event.job_id] = event.seq
            if event.type in TERMINAL_EVENTS:
                last.pop(event.job_id, None)  # bounded memory for long-lived connections
            yield event


async def subject_events(services: Services, channels: ChannelsPlugin, subject: str, owner_id: UUID, after: int,
                         finished: Callable[[], Awaitable[bool]]) -> AsyncIterator[Event]:
    """Events published under a non-job id (a batch) with `seq > after`, each once and in order.

    The caller stops at its subject's last event; a subject that `finished()` with nothing left to
    replay ends the stream too (its replay stream may have expired).
    """
    idle = services.settings.stream_idle_poll_seconds
    last = after
    async with channels.start_subscription([job_channel(subject)]) as subscriber:
        assert isinstance(subscriber, TimedSubscriber)
        backlog = await services.events.replay(subject, after)
        while True:
            for event in backlog:
                if event.seq > last:
                    yield event
                    last = event.seq
            raw = await subscriber.next_event(idle)
            if raw is None:
                backlog = await services.events.replay(subject, last)
                if not backlog and await finished():
                    return
                continue
            event = event_decoder.decode(raw)
            backlog = [*await services.events.replay(subject, last, event.seq - 1), event] \
                if event.seq > last + 1 else [event]
