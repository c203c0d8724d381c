"""One provider call for a chat completion, always recorded as an attempt."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import msgspec

from jobs import metrics, store
from jobs.catalog import Target
from jobs.errors import ProviderError
from jobs.kinds import ChatCompletionInput, Usage
from workers.providers.base import ChatOutcome, OnDelta, TargetRequest, estimate_tokens
from workers.runtime import Runtime


async def call_target(
    rt: Runtime,
    job: store.JobRow,
    target: Target,
    input: ChatCompletionInput,
    attempts: list[store.AttemptRow],
    *,
    on_delta: OnDelta | None,
    timeout: float,
) -> ChatOutcome:
    """Call `target` once; append the attempt (with partial usage when a stream broke) to `attempts`."""
    provider = rt.providers[target.provider]
    request = TargetRequest(
        model=target.model,
        messages=input.messages,
        max_tokens=min(input.max_tokens, target.max_output),
        temperature=input.temperature,
        timeout_seconds=max(0.1, timeout),
    )
    name = target.name
    emitted: list[str] = []

    async def counting(text: str) -> None:
        emitted.append(text)
        assert on_delta is not None
        await on_delta(text)

    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        outcome = await provider.chat(request, counting if on_delta else None)
    except asyncio.CancelledError:
        attempts.append(store.AttemptRow(
            attempt=job.attempts, provider=target.provider, model=target.model, started_at=started_at,
            latency_ms=(time.perf_counter() - t0) * 1000, ttft_ms=None, outcome="cancelled",
            error_code="cancelled", error_message=None, usage=None,
        ))
        raise
    except ProviderError as exc:
        latency = time.perf_counter() - t0
        partial = None
        if emitted:
            # Tokens the client saw before the failure: recorded on the attempt, never charged.
            prompt = sum(estimate_tokens(m.content) for m in input.messages)
            completion = estimate_tokens("".join(emitted))
            partial = msgspec.to_builtins(Usage(prompt_tokens=prompt, completion_tokens=completion,
                                                total_tokens=prompt + completion, estimated=True))
        attempts.append(store.AttemptRow(
            attempt=job.attempts, provider=target.provider, model=target.model, started_at=started_at,
            latency_ms=latency * 1000, ttft_ms=None, outcome="error", error_code=exc.code,
            error_message=exc.message[:500], usage=partial,
        ))
        metrics.ATTEMPTS.labels(target=name, outcome=exc.code).inc()
        metrics.PROVIDER_LATENCY.labels(target=name, outcome="error").observe(latency)
        raise
    latency = time.perf_counter() - t0
    attempts.append(store.AttemptRow(
        attempt=job.attempts, provider=target.provider, model=target.model, started_at=started_at,
        latency_ms=latency * 1000, ttft_ms=outcome.ttft_ms, outcome="ok",
        error_code=None, error_message=None, usage=msgspec.to_builtins(outcome.usage),
    ))
    metrics.ATTEMPTS.labels(target=name, outcome="ok").inc()
    metrics.PROVIDER_LATENCY.labels(target=name, outcome="ok").observe(latency)
    if outcome.ttft_ms is not None:
        metrics.PROVIDER_TTFT.labels(target=name).observe(outcome.ttft_ms / 1000)
    return outcome
