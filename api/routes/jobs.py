"""`/v1/jobs`: submit, list, read."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from api.errors import ApiError
from api.idempotency import accepted_job, fingerprint
from api.schemas import CreateJob, JobList, JobView
from api.state import Services
from jobs import credits, store
from jobs.accounts import Principal
from jobs.enqueue import Submitted, submit
from jobs.errors import NotFound
from jobs.events import CANCEL_CHANNEL
from jobs.ids import uuid7
from jobs.kinds import ChatCompletionJob, queue_for
from jobs.states import EventType, Kind, Status


def parse_id(value: str, what: str = "job") -> UUID:
    """An object id from a path; a malformed id is simply not found."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


async def load_job(services: Services, principal: Principal, job_id: str) -> store.JobRow:
    """A job the caller may see, or 404 (another owner's job is indistinguishable from none)."""
    row = await store.get_job(services.pool, parse_id(job_id), None if principal.is_admin else principal.user_id)
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    return row


async def admit(services: Services, principal: Principal, job_id: UUID) -> None:
    """Count the job against the caller's concurrent-job limit, or 429 `too_many_concurrent_jobs`."""
    if principal.is_admin:
        return
    settings = services.settings
    limit = settings.max_concurrent_jobs_pro if principal.tier == "pro" else settings.max_concurrent_jobs_free
    if not await services.inflight.admit(principal.user_id, job_id, limit):
        raise ApiError(429, "too_many_concurrent_jobs",
                       f"you already have {limit} jobs queued or running; wait for one to finish", limit=limit)


async def submit_chat(services: Services, principal: Principal, request: ChatCompletionJob,
                      idempotency_key: str | None = None, bound_to: bytes | None = None) -> Submitted:
    """Check limits, reserve credits and enqueue a chat completion (native and OpenAI-compatible routes)."""
    prompt_chars, limit = sum(len(m.content) for m in request.input.messages), services.settings.max_prompt_chars
    if prompt_chars > limit:
        raise ApiError(413, "prompt_too_large", f"messages total {prompt_chars} characters; the limit is {limit}")
    route = services.routes.resolve(request.input.model)
    job_id = uuid7()
    await admit(services, principal, job_id)
    try:
        outcome = await submit(
            services.pool, services.broker, services.events, owner_id=principal.user_id,
            kind=Kind.CHAT_COMPLETION, queue=queue_for(request), payload=msgspec.to_builtins(request.input),
            metadata=request.metadata, idempotency_key=idempotency_key, fingerprint=bound_to,
            max_attempts=services.settings.max_attempts,
            reserve=credits.worst_case(request.input, route), model=request.input.model, job_id=job_id,
        )
    except BaseException:
        await services.inflight.done(principal.user_id, job_id)
        raise
    if not outcome.created:
        await services.inflight.done(principal.user_id, job_id)
    return outcome


class JobController(Controller):
    """Native job API."""

    path = "/v1/jobs"
    tags = ("jobs",)

    @post(status_code=HTTP_202_ACCEPTED, summary="Submit a job")
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: CreateJob,
        services: Services,
        principal: Principal,
        idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key")] = None,
    ) -> Response[JobView]:
        """Validate and enqueue a job. A 202 means the job is committed and will reach a final state.

        With `Idempotency-Key`, the same key and body return the original job; the
        same key with a different body is 409 `idempotency_conflict`.
        """
        bound_to = fingerprint(idempotency_key, data)
        outcome = await submit_chat(services, principal, data, idempotency_key, bound_to)
        return accepted_job(outcome, bound_to, Kind.CHAT_COMPLETION)

    @get(summary="List your jobs")
    async def list(
        self,
        services: Services,
        principal: Principal,
        status: Status | None = None,
        kind: Kind | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    ) -> JobList:
        """The caller's jobs, newest first, filtered by status and kind; paginate with `cursor`."""
        before = parse_id(cursor, "cursor") if cursor else None
        rows = await store.list_jobs(services.pool, principal.user_id, status=status, kind=kind,
                                     before=before, limit=limit + 1)
        page = rows[:limit]
        has_more = len(rows) > limit
        return JobList(data=[JobView.of(r) for r in page], has_more=has_more,
                       next_cursor=str(page[-1].id) if has_more else None)

    @post("/{job_id:str}/cancel", status_code=200, summary="Cancel a job")
    async def cancel(self, job_id: str, services: Services, principal: Principal) -> JobView:
        """Cancel a queued job (it never runs) or a running one (its stream stops within a second).

        A job that already finished is 409 `job_finished`.
        """
        owner = None if principal.is_admin else principal.user_id
        async with services.pool.connection() as conn, conn.transaction():
            row = await store.cancel(conn, parse_id(job_id), owner)
            if row is not None:
                await credits.release_all(conn, row.owner_id, row.id, row.reserved_credits,
                                          str(row.payload.get("model") or row.kind))
        if row is None:
            current = await load_job(services, principal, job_id)  # 404 if not visible
            raise ApiError(409, "job_finished", f"job {job_id} already {current.status}",
                           job_status=current.status)
        await services.inflight.done(row.owner_id, row.id)
        await services.events.publish(row.id, row.owner_id, EventType.CANCELLED, {"error": row.error})
        await services.redis.publish(CANCEL_CHANNEL, str(row.id))
        return JobView.of(row)

    @get("/{job_id:str}", summary="Get a job")
    async def retrieve(self, job_id: str, services: Services, principal: Principal) -> JobView:
        """A job with its status, result, usage and every provider attempt."""
        row = await load_job(services, principal, job_id)
        return JobView.of(row, await store.list_attempts(services.pool, row.id))
