"""The Dramatiq worker entry point: `switchyard worker --queues chat ...` (= `dramatiq workers.app`).

Importing this module configures logging, installs the broker with the
worker's middleware and declares one actor per lane (`jobs.kinds.LANES`: every
queue some job kind runs on), all running `workers.execute.run_job`.
Operators scale by starting more pools, per queue, on any number of hosts.
"""

from __future__ import annotations

from uuid import UUID

import dramatiq
from dramatiq.middleware import AsyncIO, default_middleware
from dramatiq.middleware.prometheus import Prometheus

from jobs.broker import actor_name, make_broker
from jobs.kinds import LANES
from jobs.logging import setup_logging
from jobs.settings import get_settings
from workers.execute import run_job
from workers.middleware import FailDeadLetters, Heartbeat, WarmUp
from workers.runtime import get_runtime

settings = get_settings()
setup_logging(settings, "worker")

broker = make_broker(settings, middleware=[
    *(m() for m in default_middleware), AsyncIO(), WarmUp(), FailDeadLetters(), Heartbeat(), Prometheus(),
])
dramatiq.set_broker(broker)


async def run(job_id: str) -> None:
    """Run one delivery of a job (every queue's actor)."""
    await run_job(await get_runtime(), UUID(job_id))


#: One actor per lane so pools can be started per queue; generous limits
#: because jobs enforce their own deadline (SWITCHYARD_JOB_DEADLINE_SECONDS).
ACTORS = {
    queue: dramatiq.actor(  # type: ignore[call-overload]
        run,
        actor_name=actor_name(queue),
        queue_name=str(queue),
        max_retries=settings.delivery_retries,
        min_backoff=500,
        max_backoff=30_000,
        time_limit=int(settings.deadline_of(queue) * 1000) + 60_000,
    )
    for queue in LANES
}
