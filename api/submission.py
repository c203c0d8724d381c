"""Submitting a client's job from any route (native or OpenAI-compatible): limits, then enqueue.

    size limits ─► model routed? ─► concurrency slot ─► reserve worst case + INSERT ─► send

The concurrency slot is taken before the INSERT and given back if the
submission creates nothing (an error, or an idempotent replay).
"""

from __future__ import annotations

from uuid import UUID

from api.state import Services
from jobs import credits
from jobs.accounts import Principal
from jobs.enqueue import Submitted, submit
from jobs.errors import PromptTooLarge, TooManyConcurrentJobs
from jobs.ids import uuid7
from jobs.kinds import ChatCompletionJob


async def admit(services: Services, principal: Principal, job_id: UUID) -> None:
    """Count the job against the caller's concurrent-job limit, or 429 `too_many_concurrent_jobs`."""
    if principal.is_admin:
        return
    settings = services.settings
    limit = settings.max_concurrent_jobs_pro if principal.tier == "pro" else settings.max_concurrent_jobs_free
    if not await services.inflight.admit(principal.user_id, job_id, limit):
        raise TooManyConcurrentJobs(f"you already have {limit} jobs queued or running; wait for one to finish",
                                    limit=limit)


async def submit_chat(services: Services, principal: Principal, job: ChatCompletionJob,
                      idempotency_key: str | None = None, fingerprint: bytes | None = None) -> Submitted:
    """Check limits, reserve credits and enqueue a chat completion."""
    prompt_chars, limit = sum(len(m.content) for m in job.input.messages), services.settings.max_prompt_chars
    if prompt_chars > limit:
        raise PromptTooLarge(f"messages total {prompt_chars} characters; the limit is {limit}")
    route = services.catalog.resolve(job.input.model)
    job_id = uuid7()
    await admit(services, principal, job_id)
    try:
        outcome = await submit(
            services, services.broker, job, owner_id=principal.user_id, idempotency_key=idempotency_key,
            fingerprint=fingerprint, reserve=credits.worst_case(job.input, route), job_id=job_id,
        )
    except BaseException:
        await services.inflight.done(principal.user_id, job_id)
        raise
    if not outcome.created:
        await services.inflight.done(principal.user_id, job_id)
    return outcome
