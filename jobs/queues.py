"""Queue figures and dead letters (list, requeue, purge, hold), read from Dramatiq's Redis layout.

Under the broker's namespace `ns` (see `dramatiq/brokers/redis/dispatch.lua`):

    ns:<queue>                        LIST  message ids waiting
    ns:<queue>.msgs                   HASH  id -> message (waiting and in flight)
    ns:<queue>.DQ.msgs                HASH  delayed messages (retries with back-off)
    ns:<queue>.XQ / .XQ.msgs          ZSET of dead-lettered ids (score: when) / HASH id -> message
    ns:__acks__.<worker>.<queue>      SET   ids a worker fetched and has not acked (in flight)
    ns:__heartbeats__                 ZSET  broker id -> last heartbeat (ms) (Dramatiq's; worker
                                      processes' own beats are `jobs/pools.py`'s)
    sy:rate:{<queue>}:<what>:<bucket> enqueued / completed counters per 10 s (`jobs/broker.py`)

Every read SCANs or pipelines, so an operator's page never blocks Redis.
Unfinished jobs per queue come from PostgreSQL's partial index of live jobs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import dramatiq
import msgspec
from loguru import logger
from psycopg_pool import AsyncConnectionPool
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from jobs.broker import RATE_BUCKET_SECONDS, RATE_BUCKETS, rate_key, wake_channel
from jobs.errors import QueueNotFound
from jobs.states import Queue

_REQUEUE = (Path(__file__).parent / "requeue_dead.lua").read_text()


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """One Dramatiq queue as Redis and PostgreSQL see it now."""

    name: str
    #: Messages waiting to be fetched (ready).
    depth: int
    #: Messages fetched by a worker and not yet acknowledged.
    in_flight: int
    #: Messages waiting out a retry back-off.
    delayed: int
    #: Messages Dramatiq gave up on (`GET .../dead-letters` lists them).
    dead_letters: int
    #: Unfinished jobs of this queue by status (finished ones are counted in `/metrics`).
    jobs: dict[str, int]
    #: Age of the oldest ready message, in seconds (None: nothing waiting).
    oldest_ready_seconds: float | None = None
    #: Age of the oldest queued job, in seconds.
    oldest_queued_seconds: float | None = None
    #: Messages enqueued / jobs completed per second over the last minute.
    enqueued_per_second: float = 0.0
    completed_per_second: float = 0.0


class Requeued(msgspec.Struct, frozen=True, kw_only=True):
    """What a dead-letter requeue did."""

    queue: str
    requeued: int
    #: Dead letters left behind: unreadable bodies, or beyond `limit`.
    remaining: int
    #: The jobs the requeued messages name.
    job_ids: list[str] = []


def queue_named(name: str) -> Queue:
    """The queue called `name`.

    Raises:
        QueueNotFound: with the list of queues.
    """
    try:
        return Queue(name)
    except ValueError:
        raise QueueNotFound(f"no queue {name!r}", available=[str(q) for q in Queue]) from None


async def depths(redis: Redis, namespace: str) -> dict[str, int]:
    """Messages waiting in each queue."""
    async with redis.pipeline(transaction=False) as pipe:
        for queue in Queue:
            pipe.llen(f"{namespace}:{queue}")
        figures = await pipe.execute()
    return {str(q): int(n) for q, n in zip(Queue, figures, strict=True)}


async def in_flight(redis: Redis, namespace: str) -> dict[tuple[str, str], int]:
    """Unacked messages by (worker id, queue), from the `__acks__` sets."""
    prefix = f"{namespace}:__acks__."
    keys = [key async for key in redis.scan_iter(match=prefix + "*", count=500)]
    if not keys:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.scard(key)
        sizes = await pipe.execute()
    counts: dict[tuple[str, str], int] = {}
    for key, size in zip(keys, sizes, strict=True):
        # <ns>:__acks__.<worker id (a UUID, no dots)>.<queue name (may have dots: chat.bulk, chat.DQ)>
        worker, _, queue = key.decode()[len(prefix):].partition(".")
        counts[worker, queue] = counts.get((worker, queue), 0) + int(size)
    return counts


async def _rates(redis: Redis) -> dict[tuple[str, str], float]:
    """Per (queue, what): events per second over the last minute (this bucket so far and the full ones before)."""
    now = time.time()
    current = int(now) // RATE_BUCKET_SECONDS
    keys = [(str(q), what, current - i) for q in Queue for what in ("enqueued", "completed")
            for i in range(RATE_BUCKETS)]
    values = cast(list[bytes | None], await redis.mget([rate_key(q, w, b) for q, w, b in keys]))
    sums: dict[tuple[str, str], float] = {}
    for (q, w, _), value in zip(keys, values, strict=True):
        sums[q, w] = sums.get((q, w), 0) + int(value or 0)
    window = (RATE_BUCKETS - 1) * RATE_BUCKET_SECONDS + max(1.0, now - current * RATE_BUCKET_SECONDS)
    return {k: round(v / window, 3) for k, v in sums.items()}


def _decode(body: bytes | None) -> dramatiq.Message[Any] | None:
    """A stored message, or None when it is missing or unreadable."""
    try:
        return dramatiq.Message.decode(body) if body else None
    except Exception:
        return None


def _job_id(message: dramatiq.Message[Any] | None) -> str | None:
    """The job id a message names (our messages carry it as their only argument)."""
    return str(message.args[0]) if message is not None and message.args else None


def _message_age(body: bytes | None, now_ms: float) -> float | None:
    message = _decode(body)
    return round(max(0.0, now_ms - message.message_timestamp) / 1000, 3) if message is not None else None


async def queue_stats(redis: Redis, pool: AsyncConnectionPool, namespace: str) -> list[QueueStats]:
    """Every queue's Redis figures, rates, and its unfinished jobs by status."""
    async with redis.pipeline(transaction=False) as pipe:
        for q in Queue:
            pipe.llen(f"{namespace}:{q}")
            pipe.hlen(f"{namespace}:{q}.DQ.msgs")
            pipe.zcard(f"{namespace}:{q}.XQ")
            pipe.lindex(f"{namespace}:{q}", 0)
        figures = await pipe.execute()
    heads = [figures[4 * i + 3] for i in range(len(Queue))]
    async with redis.pipeline(transaction=False) as pipe:
        for q, head in zip(Queue, heads, strict=True):
            pipe.hget(f"{namespace}:{q}.msgs", head or b"-")
        head_bodies = await pipe.execute()
    rates = await _rates(redis)
    unacked: dict[str, int] = {}
    for (_worker, queue), n in (await in_flight(redis, namespace)).items():
        unacked[queue] = unacked.get(queue, 0) + n
    async with pool.connection() as conn:
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
    now_ms = time.time() * 1000
    stats = []
    for i, q in enumerate(Queue):
        depth, delayed, dead, _head = figures[4 * i: 4 * i + 4]
        stats.append(QueueStats(
            name=str(q), depth=depth, in_flight=unacked.get(str(q), 0), delayed=delayed, dead_letters=dead,
            jobs=jobs[str(q)], oldest_ready_seconds=_message_age(head_bodies[i], now_ms) if depth else None,
            oldest_queued_seconds=oldest.get(str(q)), enqueued_per_second=rates.get((str(q), "enqueued"), 0.0),
            completed_per_second=rates.get((str(q), "completed"), 0.0),
        ))
    return stats


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message Dramatiq gave up on, and its job."""

    message_id: str
    queue: str
    job_id: str | None
    #: The job's kind and status now (None: no such job, e.g. a foreign message).
    kind: str | None
    status: str | None
    owner_id: str | None
    #: The last line of the exception that exhausted the retries.
    error: str
    retries: int
    dead_at: datetime
    #: `dead_at` in ms since the epoch: the `before` cursor of the next page.
    dead_at_ms: int
    #: Until then the job waits (still `queued`) for a requeue; after it, maintenance fails it
    #: `delivery_failed` (`SWITCHYARD_DEAD_LETTER_HOLD_SECONDS`).
    hold_until: datetime


def _error_line(options: dict[str, Any]) -> str:
    lines = [line for line in str(options.get("traceback") or "").strip().splitlines() if line.strip()]
    return lines[-1].strip()[:500] if lines else "gave up"


async def dead_letters(redis: Redis, pool: AsyncConnectionPool, namespace: str, queue: Queue, *,
                       hold_seconds: float, limit: int, before: float | None = None) -> list[DeadLetter]:
    """Dead letters of `queue`, newest first; `before` (ms since the epoch) pages."""
    xq = f"{namespace}:{queue}.XQ"
    top = f"({before}" if before is not None else "+inf"
    members = cast(list[tuple[bytes, float]], await redis.zrevrangebyscore(xq, top, "-inf", start=0, num=limit,
                                                                            withscores=True))
    if not members:
        return []
    bodies = cast(list[bytes | None], await redis.hmget(f"{xq}.msgs", [m for m, _ in members]))
    decoded = [(member.decode(), score, message, _job_id(message))
               for (member, score), body in zip(members, bodies, strict=True) for message in [_decode(body)]]
    job_ids = [job_id for *_, job_id in decoded if job_id is not None]
    known: dict[str, tuple[str, str, str]] = {}
    if job_ids:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT id::text, kind, status, owner_id::text FROM jobs WHERE id::text = ANY(%s)",
                                     (job_ids,))
            known = {row[0]: (row[1], row[2], row[3]) for row in await cur.fetchall()}
    letters = []
    for message_id, score, message, job_id in decoded:
        kind, status, owner = known.get(job_id or "", (None, None, None))
        options = message.options if message is not None else {}
        dead_at = datetime.fromtimestamp(score / 1000, UTC)
        letters.append(DeadLetter(
            message_id=message_id, queue=str(queue), job_id=job_id, kind=kind, status=status, owner_id=owner,
            error=_error_line(options) if message is not None else "unreadable message",
            retries=int(options.get("retries", 0)), dead_at=dead_at, dead_at_ms=int(score),
            hold_until=datetime.fromtimestamp(score / 1000 + hold_seconds, UTC),
        ))
    return letters


def _held_key(queue: str) -> str:
    """HASH job id -> dead-letter message id of the jobs held for a requeue (a retried message has its own id)."""
    return f"sy:held:{{{queue}}}"


def hold(redis: SyncRedis, queue: str, job_id: str, message_id: str) -> None:
    """Mark `job_id` as held: its message is dead-lettered and the reconciler must not re-send it."""
    redis.hset(_held_key(queue), job_id, message_id)


async def _unhold(redis: Redis, queue: str, job_ids: list[str]) -> None:
    for start in range(0, len(job_ids), 1000):
        await redis.hdel(_held_key(queue), *job_ids[start:start + 1000])


async def held_dead(redis: Redis, jobs: list[tuple[str, str]], *, namespace: str) -> set[str]:
    """The job ids among (job id, queue) held for a requeue: their dead letter is still in the queue's XQ.

    A hold whose dead letter is gone (requeued, purged, or never really dead-lettered) is dropped here,
    so a stale hold can never hide a lost message from the reconciler.
    """
    if not jobs:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, queue in jobs:
            pipe.hget(_held_key(queue), job_id)
        message_ids = cast(list[bytes | None], await pipe.execute())
    holds = [(job, mid) for job, mid in zip(jobs, message_ids, strict=True) if mid is not None]
    if not holds:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for (_job_id, queue), mid in holds:
            pipe.zscore(f"{namespace}:{queue}.XQ", mid)
        scores = await pipe.execute()
    held, stale = set(), []
    for ((job_id, queue), _mid), score in zip(holds, scores, strict=True):
        if score is None:
            stale.append((job_id, queue))
        else:
            held.add(job_id)
    for job_id, queue in stale:
        await redis.hdel(_held_key(queue), job_id)
    return held


async def take_expired_holds(redis: Redis, namespace: str, hold_seconds: float) -> list[tuple[Queue, str, str]]:
    """Take (queue, job id, message id) of the holds that ran out; the caller fails those jobs.

    Taking is an HDEL, so of a requeue, a purge and this sweep only one ever owns a held job; a hold
    whose dead letter is gone is dropped. Give a job back with `hold_again` if failing it did not work.
    """
    cutoff = time.time() * 1000 - hold_seconds * 1000
    taken: list[tuple[Queue, str, str]] = []
    for queue in Queue:
        key = _held_key(str(queue))
        entries = [(job.decode(), mid.decode()) async for job, mid in redis.hscan_iter(key, count=500)]
        if not entries:
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for _job_id, mid in entries:
                pipe.zscore(f"{namespace}:{queue}.XQ", mid)
            scores = await pipe.execute()
        for (job_id, mid), score in zip(entries, scores, strict=True):
            if score is not None and score > cutoff:
                continue  # still held
            if await redis.hdel(key, job_id) and score is not None:
                taken.append((queue, job_id, mid))
    return taken


async def hold_again(redis: Redis, queue: Queue, job_id: str, message_id: str) -> None:
    """Put back a hold `take_expired_holds` took (failing its job did not work; the next sweep retries)."""
    await redis.hset(_held_key(str(queue)), job_id, message_id)


async def purge_dead(redis: Redis, namespace: str, queue: Queue, message_ids: list[str] | None = None) -> list[str]:
    """Delete dead letters of `queue` (all, or `message_ids`); returns the job ids of the ones this call removed.

    Their jobs must then be failed by the caller (a purge gives up on them). A dead letter a
    concurrent requeue moved first is not counted: its job runs.
    """
    xq, xq_msgs = f"{namespace}:{queue}.XQ", f"{namespace}:{queue}.XQ.msgs"
    purged: list[str] = []
    while True:
        if message_ids is not None:
            ids, message_ids = [m.encode() for m in message_ids[:1000]], message_ids[1000:]
        else:
            ids = cast(list[bytes], await redis.zrange(xq, 0, 999))
        if not ids:
            break
        bodies = cast(list[bytes | None], await redis.hmget(xq_msgs, ids))
        async with redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.zrem(xq, message_id)
            pipe.hdel(xq_msgs, *ids)
            removed = (await pipe.execute())[:-1]
        jobs = [job for body, gone in zip(bodies, removed, strict=True) if gone and (job := _job_id(_decode(body)))]
        await _unhold(redis, str(queue), jobs)
        purged += jobs
    logger.info("purged {} dead letters of {}", len(purged), queue)
    return purged


def _reset_for_requeue(message: dramatiq.Message[Any], queue: str) -> bytes:
    """A dead letter made fresh: back on its canonical queue, with a new retry budget."""
    options = {k: v for k, v in message.options.items() if k not in ("retries", "eta", "traceback")}
    return dataclasses.replace(message, queue_name=queue, options=options).encode()


async def requeue_dead(redis: Redis, namespace: str, queue: Queue, limit: int,
                       message_ids: list[str] | None = None,
                       before_move: Callable[[list[str]], Awaitable[None]] | None = None) -> Requeued:
    """Move up to `limit` dead letters of `queue` (or just `message_ids`) back to it, oldest first, with fresh retries.

    The messages only name their jobs: a job that already finished is not run
    again (the worker's claim turns the delivery into a no-op).
    """
    xq, xq_msgs, live, live_msgs = (f"{namespace}:{queue}.XQ", f"{namespace}:{queue}.XQ.msgs",
                                    f"{namespace}:{queue}", f"{namespace}:{queue}.msgs")
    move = redis.register_script(_REQUEUE)

    moved_jobs: list[str] = []

    async def move_some(ids: list[bytes]) -> tuple[int, int]:
        """(moved, unreadable) of one slice of ids."""
        bodies = cast(list[bytes | None], await redis.hmget(xq_msgs, ids))
        args: list[bytes] = []
        job_ids: list[str] = []
        for message_id, body in zip(ids, bodies, strict=True):
            message = _decode(body)
            if message is not None:  # unreadable or bodiless: left for Dramatiq's dead-letter expiry
                args += [message_id, _reset_for_requeue(message, str(queue))]
                if job_id := _job_id(message):
                    job_ids.append(job_id)
        # The hold is dropped first: from here on the maintenance sweep can no longer fail these jobs.
        await _unhold(redis, str(queue), job_ids)
        if job_ids and before_move is not None:
            await before_move(job_ids)
        moved = int(await move(keys=[xq, xq_msgs, live, live_msgs], args=args)) if args else 0
        moved_jobs.extend(job_ids)
        return moved, len(ids) - len(args) // 2

    requeued, offset = 0, 0
    if message_ids is not None:
        for start in range(0, min(len(message_ids), limit), 500):
            requeued += (await move_some([m.encode() for m in message_ids[start:min(start + 500, limit)]]))[0]
    while message_ids is None and requeued + offset < limit:
        ids = cast(list[bytes], await redis.zrange(xq, offset, offset + min(500, limit - requeued - offset) - 1))
        if not ids:
            break
        moved, skipped = await move_some(ids)
        requeued, offset = requeued + moved, offset + skipped
    if requeued:
        await redis.publish(wake_channel(namespace, str(queue)), b"1")
    remaining = int(await redis.zcard(xq))
    logger.info("requeued {} dead letters of {}", requeued, queue)
    return Requeued(queue=str(queue), requeued=requeued, remaining=remaining, job_ids=moved_jobs)
