"""The `chat.completion` job: route the request and build the result."""

from __future__ import annotations

from typing import Any

import msgspec

from jobs import store
from jobs.kinds import ChatCompletionInput, ChatCompletionResult
from jobs.states import EventType
from workers.routing import RouteRun
from workers.runtime import Runtime


async def run_chat_completion(
    rt: Runtime, job: store.JobRow, attempts: list[store.AttemptRow]
) -> ChatCompletionResult:
    """Run the completion over the model's route (retries, fallback, deltas when `stream`)."""
    spec = msgspec.convert(job.payload, ChatCompletionInput)

    async def publish(type: EventType, data: dict[str, Any]) -> None:
        await rt.events.publish(job.id, job.owner_id, type, data)

    target, outcome = await RouteRun(rt, job, spec, attempts, publish).run()
    return ChatCompletionResult(
        content=outcome.content,
        finish_reason=outcome.finish_reason,
        model=spec.model,
        provider=target.provider,
        provider_model=target.model,
        usage=outcome.usage,
    )
