"""The `chat.completion` job: route the request over the model's targets and build the result."""

from __future__ import annotations

from jobs import credits, store
from jobs.kinds import ChatCompletionInput, ChatCompletionResult
from workers.handlers.base import Outcome, publisher
from workers.routing import RouteRun
from workers.runtime import Runtime


async def run(rt: Runtime, job: store.JobRow, input: ChatCompletionInput,
              attempts: list[store.AttemptRow]) -> Outcome:
    """Run the completion over the model's route (retries, fallback, deltas when `stream`)."""

    target, outcome = await RouteRun(rt, job, input, attempts, publisher(rt, job)).run()
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
