"""A message Dramatiq gives up on fails its job, so every 202 still reaches a final state."""

from __future__ import annotations

from uuid import UUID

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from jobs import lifecycle
from workers.runtime import get_runtime, run_on_loop


class FailDeadLetters(Middleware):
    """At the dead-letter moment (`after_nack`: retries exhausted), fail the job and release its credits."""

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if not message.args:
            return
        reason = f"gave up after {message.options.get('retries', 0)} retries: {message.options.get('traceback', '')}"
        reason = reason.strip().splitlines()[-1] if reason.strip() else "gave up"

        async def fail() -> None:
            await lifecycle.abandon(await get_runtime(), UUID(message.args[0]), reason)

        run_on_loop(fail())
