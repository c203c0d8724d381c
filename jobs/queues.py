"""Queue figures, worker heartbeats and dead-letter requeue, read from Dramatiq's Redis layout.

Under the broker's namespace `ns` (see `dramatiq/brokers/redis/dispatch.lua`):

    ns:<queue>                        LIST  message ids waiting
    ns:<queue>.msgs                   HASH  id -> message (waiting and in flight)
    ns:<queue>.DQ.msgs                HASH  delayed messages (retries with back-off)
    ns:<queue>.XQ / .XQ.msgs          ZSET of dead-lettered ids (score: when) / HASH id -> message
    ns:__acks__.<worker>.<queue>      SET   ids a worker fetched and has not acked (in flight)
    ns:__heartbeats__                 ZSET  worker id -> last heartbeat (ms)

Every read SCANs or pipelines, so an operator's page never blocks Redis.
Unfinished jobs per queue come from PostgreSQL's partial index of live jobs.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import dramatiq
import msgspec
from loguru import logger
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from jobs.broker import wake_channel
from jobs.errors import QueueNotFound
from jobs.states import Queue

_REQUEUE = (Path(__file__).parent / "requeue_dead.lua").read_text()


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


class WorkerBeat(msgspec.Struct, frozen=True, kw_only=True):
    """One Dramatiq broker connection that beat recently (worker processes; also API and maintenance senders)."""

    worker_id: str
    last_heartbeat: datetime
    age_ms: int
    #: The last heartbeat is within `SWITCHYARD_HEARTBEAT_TIMEOUT_MS`; a dead worker's messages get requeued.
    alive: bool
    #: Messages it holds unacknowledged, by queue.
    in_flight: dict[str, int]


class Requeued(msgspec.Struct, frozen=True, kw_only=True):
    """What a dead-letter requeue did."""

    queue: str
    requeued: int
    #: Dead letters left behind: unreadable bodies, or beyond `limit`.
    remaining: int


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


async def queue_stats(redis: Redis, pool: AsyncConnectionPool, namespace: str) -> list[QueueStats]:
    """Every queue's Redis figures and its unfinished jobs by status."""
    async with redis.pipeline(transaction=False) as pipe:
        for q in Queue:
            pipe.llen(f"{namespace}:{q}")
            pipe.hlen(f"{namespace}:{q}.DQ.msgs")
            pipe.zcard(f"{namespace}:{q}.XQ")
        figures = await pipe.execute()
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
    stats = []
    for i, q in enumerate(Queue):
        depth, delayed, dead = figures[3 * i: 3 * i + 3]
        stats.append(QueueStats(name=str(q), depth=depth, in_flight=unacked.get(str(q), 0), delayed=delayed,
                                dead_letters=dead, jobs=jobs[str(q)], oldest_queued_seconds=oldest.get(str(q))))
    return stats


async def heartbeats(redis: Redis, namespace: str, timeout_ms: int) -> list[WorkerBeat]:
    """Every broker connection in Dramatiq's heartbeat set, most recent first, with its unacked messages."""
    beats = cast(list[tuple[bytes, float]], await redis.zrange(f"{namespace}:__heartbeats__", 0, -1,
                                                                withscores=True))
    unacked = await in_flight(redis, namespace)
    now_ms = time.time() * 1000
    found = []
    for member, score in sorted(beats, key=lambda b: -b[1]):
        worker_id, age = member.decode(), int(now_ms - score)
        found.append(WorkerBeat(
            worker_id=worker_id, last_heartbeat=datetime.fromtimestamp(score / 1000, UTC), age_ms=age,
            alive=age <= timeout_ms, in_flight={q: n for (w, q), n in unacked.items() if w == worker_id},
        ))
    return found


def _reset_for_requeue(body: bytes, queue: str) -> bytes | None:
    """A dead letter made fresh: back on its canonical queue, with a new retry budget; None if unreadable."""
    try:
        message = dramatiq.Message.decode(body)
    except Exception:
        return None
    options = {k: v for k, v in message.options.items() if k not in ("retries", "eta", "traceback")}
    return dataclasses.replace(message, queue_name=queue, options=options).encode()


async def requeue_dead(redis: Redis, namespace: str, queue: Queue, limit: int) -> Requeued:
    """Move up to `limit` dead letters of `queue` back to it, oldest first, with fresh retries.

    The messages only name their jobs: a job that already finished is not run
    again (the worker's claim turns the delivery into a no-op).
    """
    xq, xq_msgs, live, live_msgs = (f"{namespace}:{queue}.XQ", f"{namespace}:{queue}.XQ.msgs",
                                    f"{namespace}:{queue}", f"{namespace}:{queue}.msgs")
    move = redis.register_script(_REQUEUE)
    requeued, offset = 0, 0
    while requeued + offset < limit:
        ids = cast(list[bytes], await redis.zrange(xq, offset, offset + min(500, limit - requeued - offset) - 1))
        if not ids:
            break
        bodies = cast(list[bytes | None], await redis.hmget(xq_msgs, ids))
        args: list[bytes] = []
        for message_id, body in zip(ids, bodies, strict=True):
            fresh = _reset_for_requeue(body, str(queue)) if body is not None else None
            if fresh is None:
                offset += 1  # unreadable or bodiless: left for Dramatiq's dead-letter expiry
                continue
            args += [message_id, fresh]
        if args:
            requeued += int(await move(keys=[xq, xq_msgs, live, live_msgs], args=args))
    if requeued:
        await redis.publish(wake_channel(namespace, str(queue)), b"1")
    remaining = int(await redis.zcard(xq))
    logger.info("requeued {} dead letters of {}", requeued, queue)
    return Requeued(queue=str(queue), requeued=requeued, remaining=remaining)
