"""The `chat.completion` job: route the request over the model's targets and build the result."""

from __future__ import annotations

from typing import Any

from jobs import credits, store
from jobs.kinds import ChatCompletionInput, ChatCompletionResult
from jobs.states import EventType
from workers.handlers.base import Outcome
from workers.routing import RouteRun
from workers.runtime import Runtime


async def run(rt: Runtime, job: store.JobRow, input: ChatCompletionInput,
              attempts: list[store.AttemptRow]) -> Outcome:
    """Run the completion over the model's route (retries, fallback, deltas when `stream`)."""

    async def publish(type: EventType, data: dict[str, Any]) -> None:
        await rt.events.publish(job.id, job.owner_id, type, data)

    target, outcome = await RouteRun(rt, job, input, attempts, publish).run()
    result = ChatCompletionResult(
        content=outcome.content,
        finish_reason=outcome.finish_reason,
        model=input.model,
        provider=target.provider,
        provider_model=target.model,
        usage=outcome.usage,
    )
    # Charged at the prices of the target that served it.
    return Outcome(result, charge=credits.actual(outcome.usage, target))
