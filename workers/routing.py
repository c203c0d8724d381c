"""Routing a job over its model's targets: retry, fall back, stream safely.

For each target in the route's order (only the first with `fallback: false`):

    fits the target? ─► for each provider call: circuit breaker ─► RPM/TPM budget ─► call
        │ ProviderOverloaded: retry this call (tenacity: exponential back-off
        │   with jitter, or the provider's Retry-After), within the job deadline
        │ TargetUnavailable / retries exhausted: next target (`fallback` event)
        └ ProviderRejected: fail the job at once

`RouteWalk` is that walk; a kind says what one target does. `RouteRun` (chat)
makes one call per target. `EmbedRun` (embeddings) splits the texts into
chunks of the target's `max_inputs`, one call each, and reassembles the
vectors in input order; a fallback starts the next target from the first
chunk, since vectors of two models never mix.

Streaming: a failure before the first token is invisible to the client; a
failure after tokens were emitted publishes `reset` (discard partial output)
before the next attempt. Every call is recorded as an attempt; only the
attempts of the target that produced the result count for usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

from loguru import logger
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from jobs import metrics, store
from jobs.catalog import Mode, Target
from jobs.circuits import CircuitBreakers, record_call
from jobs.errors import (
    AllTargetsFailed,
    ContextTooLong,
    DeadlineExceeded,
    ProviderError,
    ProviderOverloaded,
    RateLimited,
    TargetUnavailable,
)
from jobs.kinds import ChatCompletionInput, EmbeddingInput, Usage
from jobs.ratelimit import RateLimiter
from jobs.states import EventType
from workers.chat_call import call_target
from workers.deltas import Deltas
from workers.embed_call import embed_target
from workers.providers.base import ChatOutcome, EmbedOutcome, estimate_tokens
from workers.runtime import Runtime

Publish = Callable[[EventType, dict[str, Any]], Awaitable[None]]
#: What a walk produces on the target that serves it, and what one provider call returns.
T = TypeVar("T")
R = TypeVar("R")


def target_name(target: Target) -> str:
    """How a target is named in events, metrics and breaker keys."""
    return target.name


class RouteWalk(Generic[T]):
    """One job's walk over its route; a subclass says what serving it on one target is (`on_target`)."""

    #: The catalogue mode of the models this walk serves.
    mode: ClassVar[Mode] = "chat"

    def __init__(self, rt: Runtime, job: store.JobRow, model: str, fallback: bool,
                 attempts: list[store.AttemptRow], publish: Publish) -> None:
        self.rt = rt
        self.job = job
        self.model = model
        self.fallback = fallback
        self.attempts = attempts
        self.publish = publish
        self.settings = rt.settings
        self.deadline = time.monotonic() + rt.settings.deadline_of(job.queue)
        self.breakers: CircuitBreakers = rt.breakers
        self.limiter: RateLimiter = rt.limiter

    def remaining(self) -> float:
        """Seconds left before the job's deadline."""
        return self.deadline - time.monotonic()

    async def run(self) -> tuple[Target, T]:
        """The first target that serves the job, and what it produced."""
        route = self.rt.catalog.resolve(self.model, self.mode)
        targets = route.targets if self.fallback else route.targets[:1]
        last: ProviderError | None = None
        for index, target in enumerate(targets):
            if last is not None:
                metrics.FALLBACKS.labels(model=self.model, reason=last.code).inc()
                logger.warning("falling back to {} after {}", target_name(target), last.code)
                await self.publish(EventType.FALLBACK, {
                    "from": target_name(targets[index - 1]), "to": target_name(target), "reason": last.code,
                })
            try:
                return target, await self.on_target(target)
            except ProviderError as exc:
                if not exc.fallback or self.remaining() <= 0:
                    raise
                last = exc
        assert last is not None
        if len(targets) == 1:
            raise last
        raise AllTargetsFailed(f"all {len(targets)} targets failed; last: {last.message}", last=last.code)

    async def on_target(self, target: Target) -> T:
        """Serve the job on `target` (raising a `ProviderError` to move on)."""
        raise NotImplementedError

    async def failed(self, name: str, exc: ProviderError) -> None:
        """A call on target `name` failed, before retries or fallback (a hook; nothing by default)."""

    async def call(self, target: Target, tokens: int, once: Callable[[float], Awaitable[R]]) -> R:
        """One provider call on `target` spending `tokens` of its budget, retried: `once(timeout)`."""
        name = target_name(target)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.retries_per_target + 1),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            before_sleep=self._announce_retry(name),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._call_once(target, name, tokens, once)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(self, target: Target, name: str, tokens: int, once: Callable[[float], Awaitable[R]]) -> R:
        if self.remaining() <= 0:
            raise DeadlineExceeded("the job's deadline passed")
        granted = await self.breakers.allow(name, probe_timeout_seconds=target.timeout_seconds)
        await self._spend_budget(target, name, tokens)
        try:
            outcome = await once(min(target.timeout_seconds, self.remaining()))
        except ProviderError as exc:
            with contextlib.suppress(RedisError):
                await record_call(self.rt.redis, name, ok=False, tokens=tokens)
            if isinstance(exc, ProviderOverloaded) and await self.breakers.failure(name, granted):
                metrics.CIRCUIT_OPENED.labels(target=name).inc()
                logger.warning("circuit opened for {}", name)
            await self.failed(name, exc)
            raise
        await self.breakers.success(name, granted)
        with contextlib.suppress(RedisError):
            await record_call(self.rt.redis, name, ok=True, tokens=tokens)
        return outcome

    async def _spend_budget(self, target: Target, name: str, tokens: int) -> None:
        while True:
            wait = (await self.limiter.spend(name, rpm=target.rpm, tpm=target.tpm, tokens=tokens)).wait
            if wait == 0:
                return
            if wait > min(self.settings.rate_limit_max_wait_seconds, self.remaining()):
                raise RateLimited(f"{name} is at its rate limit for {wait:.1f}s more", target=name)
            await asyncio.sleep(wait)

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


class RouteRun(RouteWalk[ChatOutcome]):
    """A chat completion's walk: one call per target, streaming `delta` events when asked."""

    def __init__(self, rt: Runtime, job: store.JobRow, input: ChatCompletionInput,
                 attempts: list[store.AttemptRow], publish: Publish) -> None:
        super().__init__(rt, job, input.model, input.fallback, attempts, publish)
        self.input = input
        self.prompt_tokens = sum(estimate_tokens(m.content) for m in input.messages)
        self.deltas = Deltas(self._publish_delta)

    async def on_target(self, target: Target) -> ChatOutcome:
        """The completion from `target`."""
        if self.prompt_tokens > target.context_window:
            raise ContextTooLong(
                f"~{self.prompt_tokens} prompt tokens exceed {target_name(target)}'s {target.context_window}")
        tokens = self.prompt_tokens + min(self.input.max_tokens, target.max_output)
        on_delta = self.deltas.add if self.input.stream else None
        try:
            outcome = await self.call(target, tokens, lambda timeout: call_target(
                self.rt, self.job, target, self.input, self.attempts, on_delta=on_delta, timeout=timeout))
        finally:
            await self.deltas.drain()  # every delta out before the ending (or the next target's `reset`)
        self.deltas.check()
        return outcome

    async def failed(self, name: str, exc: ProviderError) -> None:
        """Tell the client to drop what a broken stream already showed."""
        await self.deltas.drain()
        # call_target records partial usage on a failed attempt exactly when it streamed text.
        if self.attempts and self.attempts[-1].usage is not None:
            await self.publish(EventType.RESET, {"target": name, "reason": exc.code})

    async def _publish_delta(self, text: str) -> None:
        await self.publish(EventType.DELTA, {"text": text})


class EmbedRun(RouteWalk[EmbedOutcome]):
    """An embedding job's walk: the texts in chunks of each target's `max_inputs` (at most `batch`), one call
    per chunk, up to `concurrency` calls at a time; `progress(done, total)` after each call."""

    mode = "embedding"

    def __init__(self, rt: Runtime, job: store.JobRow, input: EmbeddingInput,
                 attempts: list[store.AttemptRow], publish: Publish, *, batch: int | None = None,
                 concurrency: int = 1, progress: Callable[[int, int], Awaitable[None]] | None = None) -> None:
        super().__init__(rt, job, input.model, input.fallback, attempts, publish)
        self.input = input
        self.texts = input.texts
        self.batch = batch
        self.concurrency = max(1, concurrency)
        self.progress = progress

    async def on_target(self, target: Target) -> EmbedOutcome:
        """Every text's vector from `target`, in input order, and the calls' usage summed."""
        name, dimensions = target_name(target), self.input.dimensions
        if not target.serves_dimensions(dimensions):
            raise TargetUnavailable(f"{name} cannot return {dimensions}-dimensional vectors")
        longest = max(estimate_tokens(text) for text in self.texts)
        if longest > target.context_window:
            raise ContextTooLong(f"an input of ~{longest} tokens exceeds {name}'s {target.context_window}")
        size = min(target.max_inputs, self.batch or target.max_inputs)
        groups = [self.texts[start:start + size] for start in range(0, len(self.texts), size)]
        slots = asyncio.Semaphore(self.concurrency)
        done = 0

        async def embed(group: list[str]) -> EmbedOutcome:
            nonlocal done
            async with slots:
                outcome = await self._embed_chunk(target, group)
            done += len(group)
            if self.progress is not None:
                await self.progress(done, len(self.texts))
            return outcome

        tasks = [asyncio.ensure_future(embed(group)) for group in groups]
        try:
            outcomes = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        vectors = [v for outcome in outcomes for v in outcome.vectors]
        prompt_tokens = sum(o.usage.prompt_tokens for o in outcomes)
        estimated = any(o.usage.estimated for o in outcomes)
        return EmbedOutcome(vectors=vectors, usage=Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens,
                                                         estimated=estimated))

    async def _embed_chunk(self, target: Target, chunk: list[str]) -> EmbedOutcome:
        tokens = sum(estimate_tokens(text) for text in chunk)
        return await self.call(target, tokens, lambda timeout: embed_target(
            self.rt, self.job, target, chunk, self.input.dimensions, self.attempts, timeout=timeout))
