"""Submitting a client's job from any route (native or OpenAI-compatible): limits, then enqueue.

    size limits ─► model routed (in the kind's mode)? ─► concurrency slot ─► reserve worst case + INSERT ─► send

(the INSERT and reservation of submissions arriving together share a transaction: `jobs/submitter.py`)

Each kind checks its own size and model and prices its worst case
(`submit_chat`, `submit_embedding`); the slot, the reservation and the
enqueue are shared (`_enqueue`).

The concurrency slot is taken before the INSERT and given back if the
submission creates nothing (an error, or an idempotent replay).
"""

from __future__ import annotations

from uuid import UUID

from api.state import Services
from jobs import credits
from jobs.accounts import Principal
from jobs.enqueue import Submitted
from jobs.errors import InvalidRequest, PromptTooLarge, TooManyConcurrentJobs
from jobs.ids import uuid7
from jobs.kinds import ChatCompletionJob, ClientJob, EmbeddingJob
from jobs.webhooks import check_callback_url


async def admit(services: Services, principal: Principal, job_id: UUID) -> None:
    """Count the job against the caller's concurrent-job limit, or 429 `too_many_concurrent_jobs`."""
    if principal.is_admin:
        return
    settings = services.settings
    limit = settings.max_concurrent_jobs_pro if principal.tier == "pro" else settings.max_concurrent_jobs_free
    if not await services.inflight.admit(principal.user_id, job_id, limit):
        raise TooManyConcurrentJobs(f"you already have {limit} jobs queued or running; wait for one to finish",
                                    limit=limit)


def _check_size(services: Services, what: str, chars: int) -> None:
    """413 `prompt_too_large` past `max_prompt_chars`."""
    limit = services.settings.max_prompt_chars
    if chars > limit:
        raise PromptTooLarge(f"{what} total {chars} characters; the limit is {limit}")


async def submit_chat(services: Services, principal: Principal, job: ChatCompletionJob,
                      idempotency_key: str | None = None, fingerprint: bytes | None = None) -> Submitted:
    """Check limits, reserve credits and enqueue a chat completion."""
    _check_size(services, "messages", sum(len(m.content) for m in job.input.messages))
    route = services.catalog.resolve(job.input.model)
    return await _enqueue(services, principal, job, credits.worst_case(job.input, route), idempotency_key,
                          fingerprint)


async def submit_embedding(services: Services, principal: Principal, job: EmbeddingJob,
                           idempotency_key: str | None = None, fingerprint: bytes | None = None) -> Submitted:
    """Check limits, reserve credits and enqueue an embedding job."""
    texts = job.input.texts
    _check_size(services, "inputs", sum(len(text) for text in texts))
    if (empty := next((i for i, text in enumerate(texts) if not text), None)) is not None:
        raise InvalidRequest(f"input[{empty}] is empty; every input needs text to embed")
    route = services.catalog.resolve(job.input.model, "embedding")
    targets = route.targets if job.input.fallback else route.targets[:1]
    if not any(t.serves_dimensions(job.input.dimensions) for t in targets):
        sizes = sorted({t.dimensions for t in targets if t.dimensions is not None})
        raise InvalidRequest(f"model {job.input.model!r} cannot return {job.input.dimensions}-dimensional vectors"
                             f" (its vectors have {', '.join(map(str, sizes)) or 'a fixed number of'} dimensions)")
    return await _enqueue(services, principal, job, credits.worst_case_embedding(job.input, route),
                          idempotency_key, fingerprint)


async def _enqueue(services: Services, principal: Principal, job: ClientJob, reserve: int,
                   idempotency_key: str | None, fingerprint: bytes | None) -> Submitted:
    """Take a concurrency slot, then reserve `reserve` credits, INSERT and send (the slot goes back on no job).

    A `callback_url` that resolves to a forbidden address is refused here (422), not at delivery.
    """
    if job.callback_url:
        await check_callback_url(job.callback_url, services.settings)
    job_id = uuid7()
    await admit(services, principal, job_id)
    try:
        outcome = await services.submitter.submit(
            job, owner_id=principal.user_id, idempotency_key=idempotency_key,
            fingerprint=fingerprint, reserve=reserve, job_id=job_id,
        )
    except BaseException:
        await services.inflight.done(principal.user_id, job_id)
        raise
    if not outcome.created:
        await services.inflight.done(principal.user_id, job_id)
    return outcome
