"""The `chat.completion` job: route the request, stream deltas, return the result."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec

from jobs import store
from jobs.errors import ProviderError
from jobs.kinds import ChatCompletionInput, ChatCompletionResult
from jobs.routes import Target
from jobs.states import EventType
from workers.providers.base import ChatOutcome, ChatRequest, OnDelta
from workers.runtime import Runtime


async def run_chat_completion(
    rt: Runtime, job: store.JobRow, attempts: list[store.AttemptRow]
) -> ChatCompletionResult:
    """Run the completion on the route's first target, streaming deltas when asked."""
    spec = msgspec.convert(job.payload, ChatCompletionInput)
    route = rt.routes.resolve(spec.model)
    target = route.targets[0]

    on_delta: OnDelta | None = None
    if spec.stream:
        async def on_delta(text: str) -> None:
            await rt.events.publish(job.id, job.owner_id, EventType.DELTA, {"text": text})

    outcome = await call_target(rt, job, target, spec, attempts, on_delta)
    return ChatCompletionResult(
        content=outcome.content,
        finish_reason=outcome.finish_reason,
        model=spec.model,
        provider=target.provider,
        provider_model=target.model,
        usage=outcome.usage,
    )


async def call_target(
    rt: Runtime,
    job: store.JobRow,
    target: Target,
    spec: ChatCompletionInput,
    attempts: list[store.AttemptRow],
    on_delta: OnDelta | None,
) -> ChatOutcome:
    """One provider call, recorded in `attempts` whatever its outcome."""
    provider = rt.providers[target.provider]
    request = ChatRequest(
        model=target.model,
        messages=spec.messages,
        max_tokens=min(spec.max_tokens, target.max_output),
        temperature=spec.temperature,
        timeout_seconds=target.timeout_seconds,
    )
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        outcome = await provider.chat(request, on_delta)
    except ProviderError as exc:
        attempts.append(store.AttemptRow(
            attempt=job.attempts, provider=target.provider, model=target.model, started_at=started_at,
            latency_ms=(time.perf_counter() - t0) * 1000, ttft_ms=None, outcome="error",
            error_code=exc.code, error_message=exc.message, usage=None,
        ))
        raise
    attempts.append(store.AttemptRow(
        attempt=job.attempts, provider=target.provider, model=target.model, started_at=started_at,
        latency_ms=(time.perf_counter() - t0) * 1000, ttft_ms=outcome.ttft_ms, outcome="ok",
        error_code=None, error_message=None, usage=msgspec.to_builtins(outcome.usage),
    ))
    return outcome
