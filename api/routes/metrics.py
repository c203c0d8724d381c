"""`GET /metrics`: Prometheus exposition of this API process (plus queue depths)."""

from __future__ import annotations

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.state import Services
from jobs import metrics
from jobs.states import Queue


@get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics(services: Services) -> Response[bytes]:
    """Metrics in Prometheus text format; queue depths are read from Redis at scrape time."""
    async with services.redis.pipeline(transaction=False) as pipe:
        for queue in Queue:
            pipe.llen(f"{services.broker.namespace}:{queue}")
        depths = await pipe.execute()
    for queue, depth in zip(Queue, depths, strict=True):
        metrics.QUEUE_DEPTH.labels(queue=str(queue)).set(depth)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
