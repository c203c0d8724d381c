"""`GET /metrics`: Prometheus exposition of this API process (plus queue depths)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.state import Services
from jobs import metrics
from jobs.queues import depths


@get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics(services: Services) -> Response[bytes]:
    """Metrics in Prometheus text format; queue depths are read from Redis at scrape time."""
    for queue, depth in (await depths(services.redis, services.broker.namespace)).items():
        metrics.QUEUE_DEPTH.labels(queue=queue).set(depth)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [prometheus_metrics]
