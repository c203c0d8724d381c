"""`/v1/admin/*`: operators' view of queues and workers, dead-letter requeue, credit grants, audit log.

Every route depends on `admin`, which is the caller when they are an admin
and a 403 `forbidden` otherwise; `tests/test_operators.py` calls every
`/v1/admin` route of the OpenAPI schema as a user, so a route that forgot it
fails there. Queue figures and dead letters are `jobs/queues.py`'s; the
actions (audited) `api/operators.py`'s; this module only speaks HTTP.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from api import operators
from api.auth import client_ip, provide_admin
from api.idempotency import accepted_job, fingerprint
from api.operators import Purged, WorkerList
from api.paging import Page, one_more, page
from api.state import Services
from api.views import JobView
from jobs import audit, queues, store
from jobs.accounts import Principal, UserSummary, list_users
from jobs.audit import AuditEntry
from jobs.circuits import TargetState
from jobs.errors import NotFound
from jobs.events import Event
from jobs.kinds import Credits
from jobs.queues import DeadLetter, QueueStats, Requeued
from jobs.states import Kind, Queue, Status


class AuditList(Page[AuditEntry, int], frozen=True, kw_only=True):
    """A page of audit rows; `next_cursor` is the last row's id."""


class CreateGrant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/admin/credits/grants` body."""

    user_id: UUID
    credits: Credits
    #: Why: shown in the user's ledger and in the audit log.
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class QueueList(msgspec.Struct, frozen=True, kw_only=True):
    """Every queue."""

    data: list[QueueStats]
    object: str = "list"


class DeadLetterList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a queue's dead letters, newest first; `next_before` pages on (ms since the epoch)."""

    data: list[DeadLetter]
    hold_seconds: float
    next_before: float | None = None
    object: str = "list"


class RequeueDead(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST .../dead-letters/requeue`: these messages, or (none given) up to `limit` oldest first."""

    message_ids: Annotated[list[str], msgspec.Meta(max_length=10_000)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000


class PurgeDead(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST .../dead-letters/purge`: these messages, or (none given) every dead letter of the queue."""

    message_ids: Annotated[list[str], msgspec.Meta(max_length=10_000)] | None = None


class EventList(msgspec.Struct, frozen=True, kw_only=True):
    """A job's stored events, in order."""

    data: list[Event]
    object: str = "list"


class AdminJobList(Page[JobView, str], frozen=True, kw_only=True):
    """A page of jobs of every user; `next_cursor` is the last job's id."""


class UserList(Page[UserSummary, str], frozen=True, kw_only=True):
    """A page of users with their balances."""


class ProviderList(msgspec.Struct, frozen=True, kw_only=True):
    """Every target in the routes: circuit state and recent use."""

    data: list[TargetState]
    object: str = "list"


class ForceCircuit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/admin/providers/{target}/circuit`: `open` skips the target, `closed` ignores its failures,
    `auto` hands it back to the breaker (reset)."""

    state: Literal["open", "closed", "auto"]
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class AdminController(Controller):
    """Operator endpoints; admins only."""

    path = "/v1/admin"
    tags = ("admin",)
    dependencies = {"admin": Provide(provide_admin)}  # noqa: RUF012

    @post("/credits/grants", status_code=HTTP_202_ACCEPTED, summary="Grant credits to a user")
    async def grant(
        self,
        request: Request[Any, Any, Any],
        data: CreateGrant,
        services: Services,
        admin: Principal,
        idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key")] = None,
    ) -> Response[JobView]:
        """Enqueue a `billing.grant` job that credits the user once (ledger reference `grant:<id>`).

        With `Idempotency-Key`, the same key and body return the original job; the
        same key with a different body is 409 `idempotency_conflict`. An unknown
        user is 404 `user_not_found`.
        """
        bound_to = fingerprint(idempotency_key, data)
        outcome = await operators.grant(services, client_ip(request), admin, data.user_id, data.credits, data.reason,
                                        idempotency_key=idempotency_key, fingerprint=bound_to)
        return accepted_job(outcome, bound_to, Kind.BILLING_GRANT)

    @get("/queues", summary="Queues: depth, in flight, delayed, dead letters, jobs")
    async def queues(self, services: Services, admin: Principal) -> QueueList:
        """Every queue's Redis figures and its unfinished jobs by status."""
        return QueueList(data=await queues.queue_stats(services.redis, services.pool, services.broker.namespace))

    @get("/workers", summary="Worker processes and pools")
    async def workers(self, services: Services, admin: Principal) -> WorkerList:
        """Every worker process that beat recently (stale ones marked `alive: false`), and per-pool totals."""
        return await operators.worker_list(services)

    @get("/queues/{queue:str}/dead-letters", summary="A queue's dead letters")
    async def dead_letters(
        self,
        queue: str,
        services: Services,
        admin: Principal,
        before: float | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> DeadLetterList:
        """Dead letters newest first: message and job id, kind, the job's status, the error, when, held until."""
        hold = services.settings.dead_letter_hold_seconds
        letters = await queues.dead_letters(services.redis, services.pool, services.broker.namespace,
                                            queues.queue_named(queue), hold_seconds=hold, limit=limit, before=before)
        last = letters[-1].dead_at_ms if len(letters) == limit else None
        return DeadLetterList(data=letters, hold_seconds=hold, next_before=last)

    @post("/queues/{queue:str}/dead-letters/requeue", status_code=200, summary="Requeue dead letters")
    async def requeue_dead_letters(self, request: Request[Any, Any, Any], queue: str, data: RequeueDead,
                                   services: Services, admin: Principal) -> Requeued:
        """Send dead letters back to their queue with fresh retries: the given ones, or up to `limit` oldest first.

        A held job (still `queued`) runs again; one whose hold ran out already failed and is not re-run.
        """
        return await operators.requeue(services, client_ip(request), admin, queue, data.message_ids, data.limit)

    @post("/queues/{queue:str}/dead-letters/purge", status_code=200, summary="Purge dead letters")
    async def purge_dead_letters(self, request: Request[Any, Any, Any], queue: str, data: PurgeDead,
                                 services: Services, admin: Principal) -> Purged:
        """Delete dead letters (given ones, or all) and fail their held jobs `delivery_failed`, releasing credits."""
        return await operators.purge(services, client_ip(request), admin, queue, data.message_ids)

    @get("/jobs", summary="Jobs of every user")
    async def jobs(
        self,
        services: Services,
        admin: Principal,
        status: Status | None = None,
        kind: Kind | None = None,
        queue: Queue | None = None,
        user_id: UUID | None = None,
        batch_id: str | None = None,
        cursor: UUID | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> AdminJobList:
        """Jobs newest first, filtered by status, kind, queue, owner or batch."""
        rows = await store.list_all_jobs(services.pool, owner_id=user_id, status=status, kind=kind, queue=queue,
                                         batch_id=batch_id, before=cursor, limit=one_more(limit))
        return page(AdminJobList, [JobView.of(r) for r in rows], limit, lambda v: v.id)

    @get("/jobs/{job_id:uuid}", summary="Any job, with its attempts")
    async def job(self, job_id: UUID, services: Services, admin: Principal) -> JobView:
        """One job of any user, with every provider call it made (its events: `GET /v1/admin/jobs/{id}/events`)."""
        row = await store.get_job(services.pool, job_id, None)
        if row is None:
            raise NotFound(f"job {str(job_id)!r} not found")
        return JobView.of(row, await store.list_attempts(services.pool, row.id))

    @get("/jobs/{job_id:uuid}/events", summary="Replay any job's events")
    async def job_events(self, job_id: UUID, services: Services, admin: Principal,
                         after: Annotated[int, Parameter(ge=0)] = 0) -> EventList:
        """The job's stored events after sequence `after` (the replay stream a client would get)."""
        if await store.get_job(services.pool, job_id, None) is None:
            raise NotFound(f"job {str(job_id)!r} not found")
        return EventList(data=await services.events.replay(job_id, after=after))

    @get("/providers", summary="Provider targets: circuits, error rates, RPM/TPM")
    async def providers(self, services: Services, admin: Principal) -> ProviderList:
        """Every target in the routes with its circuit state, 5-minute error rate and last-minute RPM/TPM use."""
        return ProviderList(data=await operators.provider_states(services))

    @post("/providers/{target:str}/circuit", status_code=200, summary="Force a target's circuit")
    async def force_circuit(self, request: Request[Any, Any, Any], target: str, data: ForceCircuit,
                            services: Services, admin: Principal) -> TargetState:
        """Force the circuit `open` (maintenance: fallback takes over), `closed`, or back to `auto`."""
        return await operators.force(services, client_ip(request), admin, target, data.state, data.reason)

    @get("/users", summary="Users and their credits")
    async def users(
        self,
        services: Services,
        admin: Principal,
        email: Annotated[str | None, Parameter(max_length=200)] = None,
        cursor: UUID | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> UserList:
        """Users newest first (optionally those whose e-mail contains `email`), with balance and reserved credits."""
        rows = await list_users(services.pool, email=email, before=cursor, limit=one_more(limit))
        return page(UserList, rows, limit, lambda u: str(u.id))

    @post("/queues/{queue:str}/requeue-dead", status_code=200, summary="Requeue a queue's dead letters")
    async def requeue_dead(
        self,
        request: Request[Any, Any, Any],
        queue: str,
        services: Services,
        admin: Principal,
        limit: Annotated[int, Parameter(ge=1, le=100_000)] = 10_000,
    ) -> Requeued:
        """Move up to `limit` dead-lettered messages back to their queue, oldest first, with fresh retries.

        The same as `POST .../dead-letters/requeue` with only a `limit`.
        """
        return await operators.requeue(services, client_ip(request), admin, queue, None, limit)

    @get("/audit", summary="The audit log")
    async def audit_log(
        self,
        services: Services,
        admin: Principal,
        action: str | None = None,
        actor_id: UUID | None = None,
        cursor: int | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    ) -> AuditList:
        """Audit rows, newest first, optionally filtered by `action` and `actor_id`."""
        rows = await audit.entries(services.pool, action=action, actor_id=actor_id, before=cursor,
                                   limit=one_more(limit))
        return page(AuditList, rows, limit, lambda r: r.id)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [AdminController]
