"""Operators' actions, shared by the JSON routes (`api/routes/admin.py`) and the dashboard (`api/dashboard/`).

Each action checks its arguments, does the work through `jobs/` and writes
its audit row, so neither front can act without leaving a trace.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from api.state import Services
from jobs import audit, circuits, lifecycle, pools, queues, store
from jobs.accounts import Principal, user_exists
from jobs.circuits import TargetState
from jobs.enqueue import Submitted, submit
from jobs.errors import DeadLetterNotFound, TargetNotFound, UserNotFound
from jobs.ids import uuid7
from jobs.kinds import GrantInput, GrantJob
from jobs.queues import Requeued


class WorkerList(msgspec.Struct, frozen=True, kw_only=True):
    """Worker processes, most recent heartbeat first, and their pools' totals."""

    data: list[pools.WorkerStatus]
    pools: list[pools.PoolTotals]
    heartbeat_timeout_ms: int
    object: str = "list"


class Purged(msgspec.Struct, frozen=True, kw_only=True):
    """What a purge did: messages deleted, and their jobs failed `delivery_failed` (credits released)."""

    queue: str
    purged: int
    jobs_failed: int


async def grant(services: Services, ip: str, admin: Principal, user_id: UUID, amount: int, reason: str, *,
                idempotency_key: str | None = None, fingerprint: bytes | None = None) -> Submitted:
    """Enqueue a `billing.grant` job that credits `user_id` once (ledger reference `grant:<id>`); audited.

    Raises:
        UserNotFound: no such user.
    """
    async with services.pool.connection() as conn:
        if not await user_exists(conn, user_id):
            raise UserNotFound(f"no user {user_id}")
    work = GrantInput(user_id=user_id, credits=amount, reason=reason, reference=f"grant:{uuid7()}",
                      granted_by=admin.user_id)
    outcome = await submit(services, GrantJob(input=work), owner_id=admin.user_id,
                           idempotency_key=idempotency_key, fingerprint=fingerprint)
    if outcome.created:
        async with services.pool.connection() as conn:
            await audit.audit(conn, "admin.grant", actor_id=admin.user_id, target=str(user_id), ip=ip,
                              job_id=str(outcome.job.id), credits=amount, reason=reason, reference=work.reference)
    return outcome


async def worker_list(services: Services) -> WorkerList:
    """Every worker process with a heartbeat record, and per-pool totals."""
    timeout = services.settings.heartbeat_timeout_ms
    statuses = await pools.workers(services.redis, timeout)
    return WorkerList(data=statuses, pools=pools.pools(statuses), heartbeat_timeout_ms=timeout)


async def requeue(services: Services, ip: str, admin: Principal, queue: str, message_ids: list[str] | None,
                  limit: int) -> Requeued:
    """Send dead letters back to `queue` (the given ones, or up to `limit` oldest first); audited.

    Raises:
        QueueNotFound: no such queue.
        DeadLetterNotFound: a single given message id is not a dead letter of the queue.
    """
    async def fresh_attempts(job_ids: list[str]) -> None:
        # A requeue is a deliberate retry: the claims spent failing must not quarantine the job now.
        await store.grant_attempts(services.pool, job_ids, services.settings.max_attempts)

    done = await queues.requeue_dead(services.redis, services.broker.namespace, queues.queue_named(queue), limit,
                                     message_ids, before_move=fresh_attempts)
    if message_ids is not None and len(message_ids) == 1 and done.requeued == 0:
        raise DeadLetterNotFound(f"no dead letter {message_ids[0]} in {queue}")
    async with services.pool.connection() as conn:
        await audit.audit(conn, "admin.requeue", actor_id=admin.user_id, target=done.queue, ip=ip,
                          requeued=done.requeued, remaining=done.remaining, message_ids=message_ids)
    return done


async def purge(services: Services, ip: str, admin: Principal, queue: str, message_ids: list[str] | None) -> Purged:
    """Delete dead letters of `queue` (given ones, or all) and fail their held jobs; audited."""
    named = queues.queue_named(queue)
    job_ids = await queues.purge_dead(services.redis, services.broker.namespace, named, message_ids)
    failed = 0
    for job_id in job_ids:
        ended = await lifecycle.abandon(services, UUID(job_id), f"dead letter purged by an operator ({admin.email})")
        failed += ended is not None
    async with services.pool.connection() as conn:
        await audit.audit(conn, "admin.purge", actor_id=admin.user_id, target=str(named), ip=ip,
                          purged=len(job_ids), jobs_failed=failed, message_ids=message_ids)
    return Purged(queue=str(named), purged=len(job_ids), jobs_failed=failed)


async def provider_states(services: Services) -> list[TargetState]:
    """Every target of the routes: circuit, error rate, RPM/TPM use against its limits."""
    targets = services.catalog.targets()
    return await circuits.target_states(services.redis, {n: (t.rpm, t.tpm) for n, t in targets.items()})


async def force(services: Services, ip: str, admin: Principal, target: str, state: str, reason: str) -> TargetState:
    """Force `target`'s circuit `open` / `closed`, or back to `auto`; audited.

    Raises:
        TargetNotFound: no target of this name in the routes.
    """
    known = services.catalog.targets()
    if target not in known:
        raise TargetNotFound(f"no target {target!r}", available=list(known))
    await circuits.force(services.redis, target, None if state == "auto" else state)
    async with services.pool.connection() as conn:
        await audit.audit(conn, "admin.circuit", actor_id=admin.user_id, target=target, ip=ip, state=state,
                          reason=reason)
    found = known[target]
    return (await circuits.target_states(services.redis, {target: (found.rpm, found.tpm)}))[0]
