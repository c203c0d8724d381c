"""What a worker process holds: settings, pools, clients, routes and providers.

Built lazily, once per process, on the Dramatiq event-loop thread (async
clients must be created on the loop that uses them).
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from jobs.db import open_pool
from jobs.events import EventLog
from jobs.inflight import InFlight
from jobs.ratelimit import RateLimiter
from jobs.redis import async_client
from jobs.routes import Routes, load_routes
from jobs.settings import Settings, get_settings
from workers.cancel import CancelWatcher
from workers.circuit import CircuitBreakers
from workers.providers import build_providers
from workers.providers.base import Provider


@dataclass
class Runtime:
    """Per-process resources shared by every job this process runs."""

    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    events: EventLog
    routes: Routes
    providers: dict[str, Provider]
    breakers: CircuitBreakers
    limiter: RateLimiter
    cancels: CancelWatcher
    inflight: InFlight
    worker_id: str

    async def close(self) -> None:
        """Release connections."""
        await self.cancels.stop()
        await self.pool.close()
        await self.redis.aclose()


async def create_runtime(settings: Settings) -> Runtime:
    """Connect everything a worker needs."""
    routes = load_routes(settings)
    pool = await open_pool(settings.database_url, min_size=1, max_size=max(4, settings.worker_threads + 2))
    redis = async_client(settings.redis_url)
    runtime = Runtime(
        settings=settings,
        pool=pool,
        redis=redis,
        events=EventLog(redis, settings.events_ttl_seconds),
        routes=routes,
        providers=build_providers(routes),
        breakers=CircuitBreakers(
            redis, threshold=settings.circuit_failure_threshold, window_seconds=settings.circuit_window_seconds,
            cooldown_seconds=settings.circuit_cooldown_seconds,
        ),
        limiter=RateLimiter(redis),
        cancels=CancelWatcher(),
        inflight=InFlight(redis, settings.job_expiry_seconds),
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
    )
    runtime.cancels.start(redis)
    return runtime


_runtime: Runtime | None = None
_lock: asyncio.Lock | None = None


async def get_runtime() -> Runtime:
    """This process's runtime, created on first use."""
    global _runtime, _lock
    if _runtime is None:
        _lock = _lock or asyncio.Lock()
        async with _lock:
            if _runtime is None:
                _runtime = await create_runtime(get_settings())
    return _runtime
