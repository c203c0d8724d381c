"""`/v1/admin/*`: operators' view of queues and workers, dead-letter requeue, credit grants, audit log.

Every route depends on `admin`, which is the caller when they are an admin
and a 403 `forbidden` otherwise, so no handler can forget the check. Queue
figures and requeues are `jobs/queues.py`'s; this module only speaks HTTP.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from api.auth import client_ip, provide_admin
from api.idempotency import accepted_job, fingerprint
from api.paging import Page, one_more, page
from api.state import Services
from api.views import JobView
from jobs import audit, queues
from jobs.accounts import Principal, user_exists
from jobs.audit import AuditEntry
from jobs.enqueue import submit
from jobs.errors import UserNotFound
from jobs.ids import uuid7
from jobs.kinds import Credits, GrantInput, GrantJob
from jobs.queues import QueueStats, Requeued, WorkerBeat
from jobs.states import Kind


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


class WorkerList(msgspec.Struct, frozen=True, kw_only=True):
    """Workers, most recent heartbeat first."""

    data: list[WorkerBeat]
    heartbeat_timeout_ms: int
    object: str = "list"


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
        async with services.pool.connection() as conn:
            if not await user_exists(conn, data.user_id):
                raise UserNotFound(f"no user {data.user_id}")
        grant = GrantInput(user_id=data.user_id, credits=data.credits, reason=data.reason,
                           reference=f"grant:{uuid7()}", granted_by=admin.user_id)
        outcome = await submit(services, GrantJob(input=grant), owner_id=admin.user_id,
                               idempotency_key=idempotency_key, fingerprint=bound_to)
        response = accepted_job(outcome, bound_to, Kind.BILLING_GRANT)
        if outcome.created:
            async with services.pool.connection() as conn:
                await audit.audit(conn, "admin.grant", actor_id=admin.user_id, target=str(data.user_id),
                                  ip=client_ip(request), job_id=str(outcome.job.id), credits=data.credits,
                                  reason=data.reason, reference=grant.reference)
        return response

    @get("/queues", summary="Queues: depth, in flight, delayed, dead letters, jobs")
    async def queues(self, services: Services, admin: Principal) -> QueueList:
        """Every queue's Redis figures and its unfinished jobs by status."""
        return QueueList(data=await queues.queue_stats(services.redis, services.pool, services.broker.namespace))

    @get("/workers", summary="Workers and their heartbeats")
    async def workers(self, services: Services, admin: Principal) -> WorkerList:
        """Every broker connection in Dramatiq's heartbeat set, alive or not, with its unacked messages."""
        timeout = services.settings.heartbeat_timeout_ms
        return WorkerList(data=await queues.heartbeats(services.redis, services.broker.namespace, timeout),
                          heartbeat_timeout_ms=timeout)

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

        The messages only name their jobs: a job that already finished is not
        run again (the worker's claim turns the delivery into a no-op).
        """
        done = await queues.requeue_dead(services.redis, services.broker.namespace, queues.queue_named(queue), limit)
        async with services.pool.connection() as conn:
            await audit.audit(conn, "admin.requeue", actor_id=admin.user_id, target=done.queue,
                              ip=client_ip(request), requeued=done.requeued, remaining=done.remaining)
        return done

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
