"""What a worker process holds: the common clients plus catalogue, providers, breakers and its identity.

Built lazily, once per process, on Dramatiq's event-loop thread (async
clients must be created on the loop that uses them).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from dramatiq.asyncio import get_event_loop_thread

from jobs import metrics
from jobs.catalog import Catalog, load_catalog
from jobs.circuits import CircuitBreakers
from jobs.clients import Clients
from jobs.ratelimit import RateLimiter
from jobs.redis import async_client
from jobs.settings import Settings, get_settings
from jobs.states import Queue
from workers.cancel_watcher import CancelWatcher
from workers.providers import build_providers
from workers.providers.base import Provider

T = TypeVar("T")


@dataclass
class Runtime(Clients):
    """Per-process resources shared by every job this process runs."""

    catalog: Catalog
    providers: dict[str, Provider]
    breakers: CircuitBreakers
    limiter: RateLimiter
    cancels: CancelWatcher
    worker_id: str

    async def close(self) -> None:
        """Release connections."""
        await self.cancels.stop()
        await super().close()


async def create_runtime(settings: Settings) -> Runtime:
    """Connect everything a worker needs."""
    catalog = load_catalog(settings)
    metrics.declare(queues=[str(q) for q in Queue], targets=list(catalog.targets()))
    redis = async_client(settings.redis_url)
    runtime = await Runtime.connect(
        settings, pool_size=(1, max(4, settings.worker_threads + 2)), redis=redis,
        catalog=catalog, providers=build_providers(catalog),
        breakers=CircuitBreakers(redis, threshold=settings.circuit_failure_threshold,
                                 window_seconds=settings.circuit_window_seconds,
                                 cooldown_seconds=settings.circuit_cooldown_seconds),
        limiter=RateLimiter(redis), cancels=CancelWatcher(), worker_id=f"{socket.gethostname()}:{os.getpid()}",
    )
    runtime.cancels.start(runtime.redis)
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


def run_on_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the worker's event-loop thread (Dramatiq's AsyncIO middleware) and wait for it."""
    loop_thread = get_event_loop_thread()
    assert loop_thread is not None, "AsyncIO middleware not installed"
    result: T = loop_thread.run_coroutine(coro)
    return result
