"""`/v1/jobs`: submit, list, read, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from api.idempotency import accepted_job, fingerprint
from api.lookup import load_job, owner_filter, parse_id
from api.paging import Page, one_more, page
from api.state import Services
from api.strict import strict
from api.submission import submit_chat, submit_embedding
from api.views import JobView
from jobs import lifecycle, store
from jobs.accounts import Principal
from jobs.kinds import ChatCompletionJob, ClientJob, EmbeddingJob
from jobs.states import Kind, Status

#: `POST /v1/jobs` body: a client job kind, naming any unknown field.
if TYPE_CHECKING:
    CreateJob = ClientJob
else:
    CreateJob = strict(ClientJob)


class JobList(Page[JobView, str], frozen=True, kw_only=True):
    """A page of jobs; `next_cursor` is the last job's id."""


class JobController(Controller):
    """Native job API."""

    path = "/v1/jobs"
    tags = ("jobs",)

    @post(status_code=HTTP_202_ACCEPTED, summary="Submit a job")
    async def create(
        self,
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
        match data:
            case ChatCompletionJob():
                outcome = await submit_chat(services, principal, data, idempotency_key, bound_to)
                return accepted_job(outcome, bound_to, Kind.CHAT_COMPLETION)
            case EmbeddingJob():
                outcome = await submit_embedding(services, principal, data, idempotency_key, bound_to)
                return accepted_job(outcome, bound_to, Kind.EMBEDDING)

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
                                     before=before, limit=one_more(limit))
        return page(JobList, [JobView.of(r) for r in rows], limit, lambda v: v.id)

    @post("/{job_id:str}/cancel", status_code=200, summary="Cancel a job")
    async def cancel(self, job_id: str, services: Services, principal: Principal) -> JobView:
        """Cancel a queued job (it never runs) or a running one (its stream stops within a second).

        A job that already finished is 409 `job_finished`.
        """
        return JobView.of(await lifecycle.cancel(services, parse_id(job_id), owner_filter(principal)))

    @get("/{job_id:str}", summary="Get a job")
    async def retrieve(self, job_id: str, services: Services, principal: Principal) -> JobView:
        """A job with its status, result, usage and every provider attempt."""
        row = await load_job(services, principal, job_id)
        return JobView.of(row, await store.list_attempts(services.pool, row.id))


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [JobController]
