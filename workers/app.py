"""The Dramatiq worker entry point: `dramatiq workers.app --queues chat ...`.

Importing this module configures logging, installs the broker and declares one
actor per queue, all running `workers.execute.run_job`. Operators scale by
starting more `dramatiq` processes, per queue, on any number of hosts.
"""

from __future__ import annotations

from uuid import UUID

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import AsyncIO, Middleware, default_middleware

from jobs.broker import actor_name, make_broker
from jobs.logging import setup_logging
from jobs.settings import get_settings
from jobs.states import Queue
from workers.execute import run_job
from workers.runtime import get_runtime

settings = get_settings()
setup_logging(settings, "worker")



class WarmUp(Middleware):
    """Connect to PostgreSQL and Redis at boot, not on the first job (dispatch latency)."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(get_runtime())


broker = make_broker(settings, middleware=[m() for m in default_middleware] + [AsyncIO(), WarmUp()])
dramatiq.set_broker(broker)


async def run(job_id: str) -> None:
    """Run one delivery of a job (every queue's actor)."""
    await run_job(await get_runtime(), UUID(job_id))


#: One actor per queue so pools can be started per queue; the actor's own
#: limits are generous because jobs enforce their own deadlines.
ACTORS = {
    queue: dramatiq.actor(  # type: ignore[call-overload]
        run,
        actor_name=actor_name(queue),
        queue_name=str(queue),
        max_retries=5,
        min_backoff=500,
        max_backoff=30_000,
        time_limit=3_600_000,
    )
    for queue in Queue
}
