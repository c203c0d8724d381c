"""One provider call for a chunk of an embedding job's texts, always recorded as an attempt.

The vectors are checked here, once for every adapter: one per text (else the
response is malformed: retry, then fall back) and of the size the route
promises (else the target is misconfigured: fall back at once), so a wrong
vector can never reach a result or a pgvector column.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from jobs import metrics, store
from jobs.catalog import Target
from jobs.errors import ProviderError, ProviderOverloaded, TargetUnavailable
from workers.providers.base import EmbedOutcome, EmbedRequest
from workers.runtime import Runtime


async def embed_target(
    rt: Runtime,
    job: store.JobRow,
    target: Target,
    texts: list[str],
    dimensions: int | None,
    attempts: list[store.AttemptRow],
    *,
    timeout: float,
) -> EmbedOutcome:
    """Embed `texts` on `target` in one call; append the attempt to `attempts`."""
    request = EmbedRequest(
        model=target.model,
        texts=texts,
        # A target that cannot shorten vectors serves only its native size: nothing to ask for.
        dimensions=dimensions if target.supports_dimensions else None,
        timeout_seconds=max(0.1, timeout),
    )
    name = target.name
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()

    def record(outcome: str, code: str | None = None, message: str | None = None,
               usage: dict[str, Any] | None = None) -> float:
        latency = time.perf_counter() - t0
        attempts.append(store.AttemptRow(
            attempt=job.attempts, provider=target.provider, model=target.model, started_at=started_at,
            latency_ms=latency * 1000, ttft_ms=None, outcome=outcome, error_code=code,
            error_message=message, usage=usage,
        ))
        return latency

    try:
        outcome = await rt.providers[target.provider].embed(request)
        _check(outcome, len(texts), dimensions or target.dimensions, name)
    except asyncio.CancelledError:
        record("cancelled", "cancelled")
        raise
    except ProviderError as exc:
        latency = record("error", exc.code, exc.message[:500])
        metrics.ATTEMPTS.labels(target=name, outcome=exc.code).inc()
        metrics.PROVIDER_LATENCY.labels(target=name, outcome="error").observe(latency)
        raise
    latency = record("ok", usage=msgspec.to_builtins(outcome.usage))
    metrics.ATTEMPTS.labels(target=name, outcome="ok").inc()
    metrics.PROVIDER_LATENCY.labels(target=name, outcome="ok").observe(latency)
    return outcome


def _check(outcome: EmbedOutcome, count: int, dimensions: int | None, name: str) -> None:
    """One vector per text, each of the promised size."""
    if len(outcome.vectors) != count:
        raise ProviderOverloaded(f"{name} returned {len(outcome.vectors)} vectors for {count} inputs",
                                 reason="malformed")
    sizes = {len(v) for v in outcome.vectors}
    if dimensions is not None and sizes != {dimensions}:
        raise TargetUnavailable(f"{name} returned vectors of {sorted(sizes)} dimensions, not {dimensions}; "
                                "check its `dimensions` in the routes file")
