"""The connections every Switchyard process holds, opened and closed in one place.

The API (`api/state.Services`), a worker process (`workers/runtime.Runtime`)
and the maintenance loop all need the same five things: a PostgreSQL pool, a
Redis client, the event log on it, the per-user in-flight limiter and the file
storage (`jobs/storage.py`). Each extends `Clients` with what only it needs;
every job lifecycle step (`jobs/lifecycle.py`) takes a `Clients`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from jobs.db import open_pool
from jobs.events import EventLog
from jobs.inflight import InFlight
from jobs.redis import async_client
from jobs.settings import Settings
from jobs.storage import FileStorage, storage_from


@dataclass
class Clients:
    """PostgreSQL, Redis, the event log, the in-flight limiter and the file storage of one process."""

    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    events: EventLog
    inflight: InFlight
    #: Where file bytes live (`storage_from(settings)` unless `connect` is given a `storage`).
    storage: FileStorage

    @classmethod
    async def connect(cls, settings: Settings, *, pool_size: tuple[int, int], redis: Redis | None = None,
                      db_wait_seconds: float = 30.0, **more: Any) -> Self:
        """Open the pool (waiting until it serves) and the Redis client; `more` fills a subclass's fields
        (and may replace the `storage`). A caller waits up to `db_wait_seconds` for a connection."""
        storage = more.pop("storage", None) or storage_from(settings)
        pool = await open_pool(settings.database_url, min_size=pool_size[0], max_size=pool_size[1],
                               wait_seconds=db_wait_seconds)
        redis = redis or async_client(settings.redis_url)
        return cls(settings=settings, pool=pool, redis=redis, events=EventLog(redis, settings.events_ttl_seconds),
                   inflight=InFlight(redis, settings.job_expiry_seconds), storage=storage, **more)

    async def close(self) -> None:
        """Close the pool and the Redis client."""
        await self.pool.close()
        await self.redis.aclose()
