"""Routing a chat completion over a model's targets: retry, fall back, stream safely.

For each target in the route's order (only the first with `fallback: false`):

    context-window check ─► circuit breaker ─► RPM/TPM budget ─► provider call
        │ ProviderOverloaded: retry this target (tenacity: exponential back-off
        │   with jitter, or the provider's Retry-After), within the job deadline
        │ TargetUnavailable / retries exhausted: next target (`fallback` event)
        └ ProviderRejected: fail the job at once

Streaming: a failure before the first token is invisible to the client; a
failure after tokens were emitted publishes `reset` (discard partial output)
before the next attempt. Every call is recorded as an attempt; only the
attempt that produced the result counts for usage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from jobs import metrics, store
from jobs.catalog import Target
from jobs.errors import (
    AllTargetsFailed,
    ContextTooLong,
    DeadlineExceeded,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
)
from jobs.kinds import ChatCompletionInput
from jobs.ratelimit import RateLimiter
from jobs.states import EventType
from workers.chat_call import call_target
from workers.circuit import CircuitBreakers
from workers.providers.base import ChatOutcome, estimate_tokens
from workers.runtime import Runtime

Publish = Callable[[EventType, dict[str, Any]], Awaitable[None]]


def target_name(target: Target) -> str:
    """How a target is named in events, metrics and breaker keys."""
    return f"{target.provider}:{target.model}"


class RouteRun:
    """One job's walk over its route."""

    def __init__(self, rt: Runtime, job: store.JobRow, input: ChatCompletionInput,
                 attempts: list[store.AttemptRow], publish: Publish) -> None:
        self.rt = rt
        self.job = job
        self.input = input
        self.attempts = attempts
        self.publish = publish
        self.settings = rt.settings
        self.deadline = time.monotonic() + rt.settings.job_deadline_seconds
        self.prompt_tokens = sum(estimate_tokens(m.content) for m in input.messages)
        self.breakers: CircuitBreakers = rt.breakers
        self.limiter: RateLimiter = rt.limiter

    def remaining(self) -> float:
        """Seconds left before the job's deadline."""
        return self.deadline - time.monotonic()

    async def run(self) -> tuple[Target, ChatOutcome]:
        """The first target that produces a completion, and its outcome."""
        route = self.rt.catalog.resolve(self.input.model)
        targets = route.targets if self.input.fallback else route.targets[:1]
        last: ProviderError | None = None
        for index, target in enumerate(targets):
            if last is not None:
                metrics.FALLBACKS.labels(model=self.input.model, reason=last.code).inc()
                logger.warning("falling back to {} after {}", target_name(target), last.code)
                await self.publish(EventType.FALLBACK, {
                    "from": target_name(targets[index - 1]), "to": target_name(target), "reason": last.code,
                })
            try:
                return target, await self._on_target(target)
            except ProviderError as exc:
                if not exc.fallback or self.remaining() <= 0:
                    raise
                last = exc
        assert last is not None
        if len(targets) == 1:
            raise last
        raise AllTargetsFailed(f"all {len(targets)} targets failed; last: {last.message}", last=last.code)

    async def _on_target(self, target: Target) -> ChatOutcome:
        name = target_name(target)
        if self.prompt_tokens > target.context_window:
            raise ContextTooLong(f"~{self.prompt_tokens} prompt tokens exceed {name}'s {target.context_window}")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.retries_per_target + 1),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            before_sleep=self._announce_retry(name),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._call_once(target, name)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(self, target: Target, name: str) -> ChatOutcome:
        if self.remaining() <= 0:
            raise DeadlineExceeded("the job's deadline passed")
        granted = await self.breakers.allow(name, probe_timeout_seconds=target.timeout_seconds)
        await self._spend_budget(target, name)
        try:
            outcome = await call_target(
                self.rt, self.job, target, self.input, self.attempts,
                on_delta=self._publish_delta if self.input.stream else None,
                timeout=min(target.timeout_seconds, self.remaining()),
            )
        except ProviderError as exc:
            if isinstance(exc, ProviderOverloaded) and await self.breakers.failure(name, granted):
                metrics.CIRCUIT_OPENED.labels(target=name).inc()
                logger.warning("circuit opened for {}", name)
            # call_target records partial usage on a failed attempt exactly when it streamed text.
            if self.attempts and self.attempts[-1].usage is not None:
                await self.publish(EventType.RESET, {"target": name, "reason": exc.code})
            raise
        await self.breakers.success(name, granted)
        return outcome

    async def _spend_budget(self, target: Target, name: str) -> None:
        tokens = self.prompt_tokens + min(self.input.max_tokens, target.max_output)
        while True:
            wait = (await self.limiter.spend(name, rpm=target.rpm, tpm=target.tpm, tokens=tokens)).wait
            if wait == 0:
                return
            if wait > min(self.settings.rate_limit_max_wait_seconds, self.remaining()):
                raise RateLimited(f"{name} is at its rate limit for {wait:.1f}s more", target=name)
            await asyncio.sleep(wait)

    async def _publish_delta(self, text: str) -> None:
        await self.publish(EventType.DELTA, {"text": text})

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, ProviderOverloaded):
            return False
        retry_after = exc.retry_after
        if retry_after is not None and retry_after > self.settings.max_retry_after_seconds:
            return False  # the provider wants a long pause: another target is the better bet
        return self.remaining() > (retry_after or 0)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderOverloaded) and exc.retry_after is not None:
            return exc.retry_after
        return float(wait_random_exponential(multiplier=0.2, max=4)(state))

    def _announce_retry(self, name: str) -> Callable[[RetryCallState], Awaitable[None]]:
        async def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.code if isinstance(exc, ProviderError) else "unknown"
            if isinstance(exc, ProviderOverloaded):
                reason = exc.reason
            wait = state.next_action.sleep if state.next_action else 0.0
            metrics.RETRIES.labels(target=name, reason=reason).inc()
            logger.warning("retrying {} in {:.2f}s ({})", name, wait, reason)
            await self.publish(EventType.RETRYING, {
                "target": name, "attempt": state.attempt_number + 1, "reason": reason, "wait_seconds": wait,
            })
        return before_sleep
