"""A message Dramatiq gives up on is held for an operator, then fails its job: every 202 still ends.

With `SWITCHYARD_DEAD_LETTER_HOLD_SECONDS` > 0 the job stays `queued` while
its message sits in the dead-letter queue: an operator who fixed the cause
requeues it (`/v1/admin/queues/{queue}/dead-letters`, the dashboard) and it
runs; the reconciler leaves it alone; when the hold runs out the maintenance
loop fails it `delivery_failed` (`workers/maintenance.py`). With 0 it fails at once.
"""

from __future__ import annotations

from uuid import UUID

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware
from loguru import logger

from jobs import lifecycle, metrics, queues
from jobs.settings import get_settings
from workers.runtime import get_runtime, run_on_loop


class FailDeadLetters(Middleware):
    """At the dead-letter moment (`after_nack`: retries exhausted), hold the job or fail it."""

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if not message.args:
            return
        metrics.DEAD_LETTERS.labels(queue=message.queue_name).inc()
        hold = get_settings().dead_letter_hold_seconds
        if hold > 0:
            queues.hold(broker.client, message.queue_name, str(message.args[0]),  # type: ignore[attr-defined]
                        message.options["redis_message_id"])
            logger.bind(job_id=str(message.args[0])).error(
                "dead-lettered after {} retries; held {} s for a requeue", message.options.get("retries", 0), hold)
            return
        reason = f"gave up after {message.options.get('retries', 0)} retries: {message.options.get('traceback', '')}"
        reason = reason.strip().splitlines()[-1] if reason.strip() else "gave up"

        async def fail() -> None:
            await lifecycle.abandon(await get_runtime(), UUID(message.args[0]), reason)

        run_on_loop(fail())
