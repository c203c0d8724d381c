"""What every job handler is: a coroutine from a claimed job and its typed input to an `Outcome`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from jobs import store
from jobs.knowledge import Effect
from jobs.states import EventType
from workers.runtime import Runtime


@dataclass(frozen=True)
class Outcome:
    """A handler's result, and what it costs."""

    result: msgspec.Struct
    #: Credits to charge; the settlement caps it at the job's reservation.
    charge: int = 0
    #: What the job produced beyond its result, written in its ending transaction (`lifecycle.succeed`).
    effect: Effect | None = None


#: Publishes one event of the job being run.
Publish = Callable[[EventType, dict[str, Any]], Awaitable[None]]


def publisher(rt: Runtime, job: store.JobRow) -> Publish:
    """How a handler publishes its job's events; a batch line publishes none (its batch reports progress)."""

    async def publish(type: EventType, data: dict[str, Any]) -> None:
        if job.batch_id is None:
            await rt.events.publish(job.id, job.owner_id, type, data)

    return publish


#: (runtime, the claimed job, its decoded input, the attempt log to append provider calls to) -> Outcome.
Handler = Callable[[Runtime, store.JobRow, Any, list[store.AttemptRow]], Awaitable[Outcome]]
