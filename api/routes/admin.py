"""`/v1/admin/*`: operators' view of queues and workers, dead-letter requeue, credit grants, audit log.

Every route depends on `admin`, which is the caller when they are an admin
and a 403 `forbidden` otherwise, so no handler can forget the check.

Queue figures come straight from Dramatiq's Redis layout (see
`dramatiq/brokers/redis/dispatch.lua`), under the broker's namespace `ns`:

    ns:<queue>                        LIST  message ids waiting
    ns:<queue>.msgs                   HASH  id -> message (waiting and in flight)
    ns:<queue>.DQ.msgs                HASH  delayed messages (retries with back-off)
    ns:<queue>.XQ / .XQ.msgs          ZSET of dead-lettered ids (score: when) / HASH id -> message
    ns:__acks__.<worker>.<queue>      SET   ids a worker fetched and has not acked (in flight)
    ns:__heartbeats__                 ZSET  worker id -> last heartbeat (ms)
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from uuid import UUID

import dramatiq
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.exceptions import PermissionDeniedException
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED
from loguru import logger

from api.errors import ApiError
from api.idempotency import accepted_job, fingerprint
from api.schemas import JobView
from api.state import Services
from jobs.accounts import Principal
from jobs.audit import audit
from jobs.broker import wake_channel
from jobs.enqueue import submit
from jobs.ids import uuid7
from jobs.payments import Credits, GrantInput
from jobs.states import Kind, Queue


async def provide_admin(principal: Principal) -> Principal:
    """Dependency: the caller, if an admin; else 403 `forbidden`."""
    if not principal.is_admin:
        raise PermissionDeniedException("admin role required")
    return principal


# --- Schemas ---------------------------------------------------------------------------------------------------


class CreateGrant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/admin/credits/grants` body."""

    user_id: UUID
    credits: Credits
    #: Why: shown in the user's ledger and in the audit log.
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """One Dramatiq queue as Redis and PostgreSQL see it now."""

    name: str
    #: Messages waiting to be fetched.
    depth: int
    #: Messages fetched by a worker and not yet acknowledged.
    in_flight: int
    #: Messages waiting out a retry back-off.
    delayed: int
    #: Messages Dramatiq gave up on (kept 7 days; `POST .../requeue-dead` sends them back).
    dead_letters: int
    #: Unfinished jobs of this queue by status (finished ones are counted in `/metrics`).
    jobs: dict[str, int]
    #: Age of the oldest queued job, in seconds.
    oldest_queued_seconds: float | None = None


class QueueList(msgspec.Struct, frozen=True, kw_only=True):
    """Every queue."""

    data: list[QueueStats]
    object: str = "list"


class WorkerView(msgspec.Struct, frozen=True, kw_only=True):
    """One Dramatiq broker connection that beat recently (worker processes; also API and maintenance senders)."""

    worker_id: str
    last_heartbeat: datetime
    age_ms: int
    #: The last heartbeat is within `SWITCHYARD_HEARTBEAT_TIMEOUT_MS`; a dead worker's messages get requeued.
    alive: bool
    #: Messages it holds unacknowledged, by queue.
    in_flight: dict[str, int]


class WorkerList(msgspec.Struct, frozen=True, kw_only=True):
    """Workers, most recent heartbeat first."""

    data: list[WorkerView]
    heartbeat_timeout_ms: int
    object: str = "list"


class RequeueResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `requeue-dead` did."""

    queue: str
    requeued: int
    #: Dead letters left behind: unreadable bodies, or beyond `limit`.
    remaining: int


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One audit row."""

    id: int
    at: datetime
    action: str
    actor_id: str | None
    target: str | None
    ip: str | None
    details: dict[str, Any] | None


class AuditList(msgspec.Struct, frozen=True, kw_only=True):
    """Audit rows, newest first; pass `next_cursor` as `cursor` for the next page."""

    data: list[AuditEntry]
    has_more: bool
    next_cursor: int | None
    object: str = "list"


# --- Redis -----------------------------------------------------------------------------------------------------

#: Moves dead letters back to their queue. KEYS: xq, xq.msgs, queue, queue.msgs; ARGV: id, body, id, body, …
#: A message still in the XQ is moved exactly once, even with two admins requeueing at the same moment.
_REQUEUE = """
local moved = 0
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('zrem', KEYS[1], id) == 1 then
    redis.call('hdel', KEYS[2], id)
    redis.call('hset', KEYS[4], id, ARGV[i + 1])
    redis.call('rpush', KEYS[3], id)
    moved = moved + 1
  end
end
return moved
"""


async def _in_flight(services: Services) -> dict[tuple[str, str], int]:
    """Unacked messages by (worker id, queue), from the `__acks__` sets (SCAN: never blocks Redis)."""
    prefix = f"{services.broker.namespace}:__acks__."
    keys = [key async for key in services.redis.scan_iter(match=prefix + "*", count=500)]
    if not keys:
        return {}
    async with services.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.scard(key)
        sizes = await pipe.execute()
    counts: dict[tuple[str, str], int] = {}
    for key, size in zip(keys, sizes, strict=True):
        # <ns>:__acks__.<worker id (a UUID, no dots)>.<queue name (may have dots: chat.bulk, chat.DQ)>
        worker, _, queue = key.decode()[len(prefix):].partition(".")
        counts[worker, queue] = counts.get((worker, queue), 0) + int(size)
    return counts


def _reset_for_requeue(body: bytes, queue: str) -> bytes | None:
    """A dead letter made fresh: back on its canonical queue, with a new retry budget; None if unreadable."""
    try:
        message = dramatiq.Message.decode(body)
    except Exception:
        return None
    options = {k: v for k, v in message.options.items() if k not in ("retries", "eta", "traceback")}
    return dataclasses.replace(message, queue_name=queue, options=options).encode()


# --- Routes ----------------------------------------------------------------------------------------------------


def _queue(name: str) -> Queue:
    try:
        return Queue(name)
    except ValueError:
        raise ApiError(404, "queue_not_found", f"no queue {name!r}", available=[str(q) for q in Queue]) from None


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
            cur = await conn.execute("SELECT 1 FROM users WHERE id = %s", (data.user_id,))
            if await cur.fetchone() is None:
                raise ApiError(404, "user_not_found", f"no user {data.user_id}")
        spec = GrantInput(user_id=data.user_id, credits=data.credits, reason=data.reason,
                          reference=f"grant:{uuid7()}", granted_by=admin.user_id)
        outcome = await submit(services.pool, services.broker, services.events, owner_id=admin.user_id,
                               kind=Kind.BILLING_GRANT, queue=Queue.BILLING, payload=msgspec.to_builtins(spec),
                               idempotency_key=idempotency_key, fingerprint=bound_to,
                               max_attempts=services.settings.max_attempts)
        response = accepted_job(outcome, bound_to, Kind.BILLING_GRANT)
        if outcome.created:
            async with services.pool.connection() as conn:
                await audit(conn, "admin.grant", actor_id=admin.user_id, target=str(data.user_id),
                            ip=request.client.host if request.client else None, job_id=str(outcome.job.id),
                            credits=data.credits, reason=data.reason, reference=spec.reference)
        return response

    @get("/queues", summary="Queues: depth, in flight, delayed, dead letters, jobs")
    async def queues(self, services: Services, admin: Principal) -> QueueList:
        """Every queue's Redis figures and its unfinished jobs by status."""
        ns = services.broker.namespace
        async with services.redis.pipeline(transaction=False) as pipe:
            for q in Queue:
                pipe.llen(f"{ns}:{q}")
                pipe.hlen(f"{ns}:{q}.DQ.msgs")
                pipe.zcard(f"{ns}:{q}.XQ")
            figures = await pipe.execute()
        in_flight: dict[str, int] = {}
        for (_worker, queue), n in (await _in_flight(services)).items():
            in_flight[queue] = in_flight.get(queue, 0) + n
        async with services.pool.connection() as conn:
            # Only unfinished jobs: the partial index over live jobs answers without touching history.
            cur = await conn.execute(
                """
                SELECT queue, status, count(*), extract(epoch FROM now() - min(created_at))
                FROM jobs WHERE status IN ('queued', 'running') GROUP BY queue, status
                """
            )
            rows = await cur.fetchall()
        jobs: dict[str, dict[str, int]] = {str(q): {"queued": 0, "running": 0} for q in Queue}
        oldest: dict[str, float] = {}
        for queue, status, count, age in rows:
            jobs.setdefault(queue, {"queued": 0, "running": 0})[status] = count
            if status == "queued":
                oldest[queue] = round(float(age), 3)
        data = []
        for i, q in enumerate(Queue):
            depth, delayed, dead = figures[3 * i: 3 * i + 3]
            data.append(QueueStats(name=str(q), depth=depth, in_flight=in_flight.get(str(q), 0), delayed=delayed,
                                   dead_letters=dead, jobs=jobs[str(q)], oldest_queued_seconds=oldest.get(str(q))))
        return QueueList(data=data)

    @get("/workers", summary="Workers and their heartbeats")
    async def workers(self, services: Services, admin: Principal) -> WorkerList:
        """Every broker connection in Dramatiq's heartbeat set, alive or not, with its unacked messages."""
        beats = cast(list[tuple[bytes, float]], await services.redis.zrange(
            f"{services.broker.namespace}:__heartbeats__", 0, -1, withscores=True))
        in_flight = await _in_flight(services)
        timeout = services.settings.heartbeat_timeout_ms
        now_ms = time.time() * 1000
        data = []
        for member, score in sorted(beats, key=lambda b: -b[1]):
            worker_id, age = member.decode(), int(now_ms - score)
            data.append(WorkerView(
                worker_id=worker_id, last_heartbeat=datetime.fromtimestamp(score / 1000, UTC), age_ms=age,
                alive=age <= timeout,
                in_flight={q: n for (w, q), n in in_flight.items() if w == worker_id},
            ))
        return WorkerList(data=data, heartbeat_timeout_ms=timeout)

    @post("/queues/{queue:str}/requeue-dead", status_code=200, summary="Requeue a queue's dead letters")
    async def requeue_dead(
        self,
        request: Request[Any, Any, Any],
        queue: str,
        services: Services,
        admin: Principal,
        limit: Annotated[int, Parameter(ge=1, le=100_000)] = 10_000,
    ) -> RequeueResult:
        """Move up to `limit` dead-lettered messages back to their queue, oldest first, with fresh retries.

        The messages only name their jobs: a job that already finished is not
        run again (the worker's claim turns the delivery into a no-op).
        """
        q = _queue(queue)
        ns = services.broker.namespace
        xq, xq_msgs, live, live_msgs = f"{ns}:{q}.XQ", f"{ns}:{q}.XQ.msgs", f"{ns}:{q}", f"{ns}:{q}.msgs"
        move = services.redis.register_script(_REQUEUE)
        requeued, offset = 0, 0
        while requeued + offset < limit:
            ids = cast(list[bytes], await services.redis.zrange(
                xq, offset, offset + min(500, limit - requeued - offset) - 1))
            if not ids:
                break
            bodies = cast(list[bytes | None], await services.redis.hmget(xq_msgs, ids))
            args: list[bytes] = []
            for message_id, body in zip(ids, bodies, strict=True):
                fresh = _reset_for_requeue(body, str(q)) if body is not None else None
                if fresh is None:
                    offset += 1  # unreadable or bodiless: left for Dramatiq's dead-letter expiry
                    continue
                args += [message_id, fresh]
            if args:
                requeued += int(await move(keys=[xq, xq_msgs, live, live_msgs], args=args))
        if requeued:
            await services.redis.publish(wake_channel(ns, str(q)), b"1")
        remaining = int(await services.redis.zcard(xq))
        logger.info("requeued {} dead letters of {}", requeued, q)
        async with services.pool.connection() as conn:
            await audit(conn, "admin.requeue", actor_id=admin.user_id, target=str(q),
                        ip=request.client.host if request.client else None, requeued=requeued, remaining=remaining)
        return RequeueResult(queue=str(q), requeued=requeued, remaining=remaining)

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
        async with services.pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT id, at, action, actor_id, target, ip, details FROM audit_log
                WHERE (%(action)s::text IS NULL OR action = %(action)s)
                  AND (%(actor)s::uuid IS NULL OR actor_id = %(actor)s)
                  AND (%(cursor)s::bigint IS NULL OR id < %(cursor)s)
                ORDER BY id DESC LIMIT %(limit)s
                """,
                {"action": action, "actor": actor_id, "cursor": cursor, "limit": limit + 1},
            )
            rows = await cur.fetchall()
        page = [AuditEntry(id=r[0], at=r[1], action=r[2], actor_id=str(r[3]) if r[3] else None, target=r[4],
                           ip=r[5], details=r[6]) for r in rows[:limit]]
        has_more = len(rows) > limit
        return AuditList(data=page, has_more=has_more, next_cursor=page[-1].id if has_more else None)


#: Route handlers of this module, registered by api/app.py.
ROUTES: list[Any] = [AdminController]
