"""The Dramatiq worker entry point: `switchyard worker --queues chat ...` (= `dramatiq workers.app`).

Importing this module configures logging, installs the broker and declares one
actor per queue, all running `workers.execute.run_job`. Operators scale by
starting more pools, per queue, on any number of hosts.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.middleware import AsyncIO, Middleware, default_middleware
from dramatiq.middleware.prometheus import Prometheus

from jobs.broker import actor_name, make_broker
from jobs.logging import setup_logging
from jobs.settings import get_settings
from jobs.states import Queue
from workers.execute import fail_exhausted, run_job
from workers.runtime import get_runtime

settings = get_settings()
setup_logging(settings, "worker")


def _on_loop(coro: Any) -> Any:
    """Run a coroutine on the worker's event loop thread and wait for it."""
    loop_thread = get_event_loop_thread()
    assert loop_thread is not None, "AsyncIO middleware not installed"
    return loop_thread.run_coroutine(coro)


class WarmUp(Middleware):
    """Connect to PostgreSQL and Redis at boot, not on the first job (dispatch latency)."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        _on_loop(get_runtime())


class FailDeadLetters(Middleware):
    """A message Dramatiq gives up on (retries exhausted, dead-lettered) fails its job, so a 202 still ends."""

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if not message.args:
            return
        reason = f"gave up after {message.options.get('retries', 0)} retries: {message.options.get('traceback', '')}"
        reason = reason.strip().splitlines()[-1] if reason.strip() else "gave up"

        async def fail() -> None:
            await fail_exhausted(await get_runtime(), UUID(message.args[0]), reason)

        _on_loop(fail())


broker = make_broker(settings, middleware=[
    *(m() for m in default_middleware), AsyncIO(), WarmUp(), FailDeadLetters(), Prometheus(),
])
dramatiq.set_broker(broker)


async def run(job_id: str) -> None:
    """Run one delivery of a job (every queue's actor)."""
    await run_job(await get_runtime(), UUID(job_id))


#: One actor per queue so pools can be started per queue; generous limits
#: because jobs enforce their own deadline (SWITCHYARD_JOB_DEADLINE_SECONDS).
ACTORS = {
    queue: dramatiq.actor(  # type: ignore[call-overload]
        run,
        actor_name=actor_name(queue),
        queue_name=str(queue),
        max_retries=settings.delivery_retries,
        min_backoff=500,
        max_backoff=30_000,
        time_limit=int(settings.job_deadline_seconds * 1000) + 60_000,
    )
    for queue in Queue
}
