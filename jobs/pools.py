"""Worker processes' heartbeats and the pools they form.

Every Dramatiq worker *process* (not the API, not maintenance: they only
send) beats every `heartbeat_timeout_ms / 3` into Redis:

    sy:workers          ZSET  "<host>:<pid>" -> last beat (ms since the epoch)
    sy:worker:<id>      STRING the process's `WorkerBeat` (msgpack), expires after 10 timeouts

`/v1/admin/workers` and the dashboard read both; a process whose last beat
is older than the timeout is shown `alive: false` (stale) until its record
expires; one that exits cleanly removes itself. `switchyard worker-ready`
(the pods' probe) asks whether a process of this host beat recently.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import cast

import msgspec
from redis import Redis as SyncRedis
from redis.asyncio import Redis

WORKERS_KEY = "sy:workers"
#: A stale record is kept this many heartbeat timeouts, so operators see what died.
STALE_KEEP = 10


def _record_key(worker_id: str) -> str:
    return f"sy:worker:{worker_id}"


class WorkerBeat(msgspec.Struct, frozen=True, kw_only=True):
    """One worker process as it last described itself."""

    #: `<host>:<pid>`.
    id: str
    host: str
    pid: int
    #: `switchyard worker --pool NAME` (default: the queues it consumes, joined by `+`).
    pool: str
    queues: list[str]
    #: Jobs it can run at once (its Dramatiq threads).
    concurrency: int
    #: Jobs it is running now.
    in_flight: int
    #: Jobs it has finished (any outcome) since it started.
    processed: int
    version: str
    started_at: datetime
    last_beat: datetime
    #: Dramatiq's broker id of the process (its unacked messages live under `__acks__.<broker_id>.*`).
    broker_id: str = ""


class WorkerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A worker process as operators see it: its beat, and whether it is still alive."""

    worker: WorkerBeat
    age_ms: int
    #: The last beat is within the heartbeat timeout; a stale process is dead or stuck.
    alive: bool


class PoolTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Live processes of one pool, summed."""

    pool: str
    queues: list[str]
    processes: int
    stale: int
    hosts: list[str]
    concurrency: int
    in_flight: int
    processed: int


def beat(redis: SyncRedis, record: WorkerBeat, timeout_ms: int) -> None:
    """Write one heartbeat (from the worker's heartbeat thread)."""
    now_ms = int(record.last_beat.timestamp() * 1000)
    pipe = redis.pipeline(transaction=False)
    pipe.set(_record_key(record.id), msgspec.msgpack.encode(record), px=timeout_ms * STALE_KEEP)
    pipe.zadd(WORKERS_KEY, {record.id: now_ms})
    # Forget members whose record expired long ago (killed processes on hosts that never came back).
    pipe.zremrangebyscore(WORKERS_KEY, "-inf", now_ms - timeout_ms * STALE_KEEP)
    pipe.execute()


def leave(redis: SyncRedis, worker_id: str) -> None:
    """A clean exit: the process is gone, not stale."""
    pipe = redis.pipeline(transaction=False)
    pipe.zrem(WORKERS_KEY, worker_id)
    pipe.delete(_record_key(worker_id))
    pipe.execute()


async def workers(redis: Redis, timeout_ms: int) -> list[WorkerStatus]:
    """Every worker process with a record, most recent beat first."""
    members = cast(list[tuple[bytes, float]], await redis.zrange(WORKERS_KEY, 0, -1, withscores=True))
    if not members:
        return []
    records = cast(list[bytes | None], await redis.mget([_record_key(m.decode()) for m, _ in members]))
    now_ms = time.time() * 1000
    found = []
    for (_member, score), raw in zip(members, records, strict=True):
        if raw is None:
            continue
        record = msgspec.msgpack.decode(raw, type=WorkerBeat)
        age = max(0, int(now_ms - score))
        found.append(WorkerStatus(worker=record, age_ms=age, alive=age <= timeout_ms))
    return sorted(found, key=lambda w: w.age_ms)


def pools(statuses: list[WorkerStatus]) -> list[PoolTotals]:
    """Per-pool totals of live processes (stale ones only counted as `stale`)."""
    grouped: dict[str, list[WorkerStatus]] = {}
    for status in statuses:
        grouped.setdefault(status.worker.pool, []).append(status)
    totals = []
    for name, members in sorted(grouped.items()):
        live = [m.worker for m in members if m.alive]
        totals.append(PoolTotals(
            pool=name, queues=sorted({q for m in members for q in m.worker.queues}), processes=len(live),
            stale=len(members) - len(live), hosts=sorted({w.host for w in live}),
            concurrency=sum(w.concurrency for w in live), in_flight=sum(w.in_flight for w in live),
            processed=sum(w.processed for w in live),
        ))
    return totals


def live_on_host(redis: SyncRedis, host: str, timeout_ms: int) -> list[str]:
    """Ids of the processes of `host` that beat within the timeout (the readiness probe's question)."""
    since = time.time() * 1000 - timeout_ms
    members = [m.decode() for m in cast(list[bytes], redis.zrangebyscore(WORKERS_KEY, since, "+inf"))]
    return [m for m in members if m.rpartition(":")[0] == host]


def now() -> datetime:
    """The time a beat carries."""
    return datetime.now(UTC)
