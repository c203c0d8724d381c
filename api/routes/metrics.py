"""`GET /metrics`: Prometheus exposition of the API (every process of it in multiprocess mode).

Queue figures and circuit states are read from Redis at scrape time, so they
are current whichever process answers. With `PROMETHEUS_MULTIPROC_DIR` set
(`switchyard api` sets it), the figures of every API process on this host
are merged; files of processes that died are cleaned up at each start.
"""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from api import operators
from api.state import Services
from jobs import metrics, queues
from jobs.circuits import GAUGE_VALUE
from jobs.settings import prometheus_dir


async def sample(services: Services) -> None:
    """Set the gauges that describe Redis, not this process: queues and circuits.

    Redis or PostgreSQL down must not take `/metrics` with them (that is when operators need it):
    the gauges keep their last values and the failure is logged.
    """
    try:
        await _sample(services)
    except Exception as exc:
        logger.warning("queue and circuit gauges not refreshed: {}", type(exc).__name__)


async def _sample(services: Services) -> None:
    for stats in await queues.queue_stats(services.redis, services.pool, services.broker.namespace):
        metrics.QUEUE_DEPTH.labels(queue=stats.name).set(stats.depth)
        metrics.QUEUE_DEAD_LETTERS.labels(queue=stats.name).set(stats.dead_letters)
        metrics.QUEUE_OLDEST_READY.labels(queue=stats.name).set(stats.oldest_ready_seconds or 0)
    for state in await operators.provider_states(services):
        metrics.CIRCUIT_STATE.labels(target=state.target).set(GAUGE_VALUE[state.state])


@get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics(services: Services) -> Response[bytes]:
    """Metrics in Prometheus text format."""
    await sample(services)
    if prometheus_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [prometheus_metrics]
