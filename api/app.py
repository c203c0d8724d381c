"""The Litestar application: `create_app()`; served by `switchyard api` (uvicorn)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from loguru import logger

from api.auth import provide_principal, provide_services
from api.errors import problem_handler
from api.middleware import request_id_middleware
from api.routes import admin, auth, billing, credits, keys, openai_compat
from api.routes.health import healthz, readyz
from api.routes.jobs import JobController
from api.routes.metrics import prometheus_metrics
from api.routes.models import list_models
from api.routes.streams import all_events, job_sse, job_stream
from api.state import Services
from api.streaming import TimedSubscriber
from jobs.broker import make_broker
from jobs.db import open_pool
from jobs.events import EventLog
from jobs.inflight import InFlight
from jobs.logging import setup_logging
from jobs.ratelimit import RateLimiter
from jobs.redis import async_client
from jobs.routes import load_routes
from jobs.settings import DEV_JWT_SECRET, Settings, get_settings


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API for `settings` (default: from the environment)."""
    settings = settings or get_settings()
    setup_logging(settings, "api")
    if settings.jwt_secret == DEV_JWT_SECRET:
        logger.warning("SWITCHYARD_JWT_SECRET is the development default: set a secret before exposing this API")
    routes = load_routes(settings)
    redis = async_client(settings.redis_url or "redis://unset")
    channels = ChannelsPlugin(
        backend=RedisChannelsPubSubBackend(redis=redis),
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_class=TimedSubscriber,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await open_pool(settings.database_url, min_size=2, max_size=20)
        broker = make_broker(settings, middleware=[])
        app.state.services = Services(
            settings=settings, pool=pool, redis=redis, broker=broker,
            events=EventLog(redis, settings.events_ttl_seconds), routes=routes,
            limiter=RateLimiter(redis), inflight=InFlight(redis, settings.job_expiry_seconds),
        )
        try:
            yield
        finally:
            await pool.close()
            broker.close()
            await redis.aclose()

    return Litestar(
        route_handlers=[healthz, readyz, prometheus_metrics, JobController, list_models, job_stream, job_sse,
                        all_events, *auth.ROUTES, *keys.ROUTES, *credits.ROUTES, *billing.ROUTES, *admin.ROUTES,
                        *openai_compat.ROUTES],
        dependencies={"services": Provide(provide_services, sync_to_thread=False),
                      "principal": Provide(provide_principal)},
        plugins=[channels],
        lifespan=[lifespan],
        middleware=[request_id_middleware],
        exception_handlers={Exception: problem_handler},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Switchyard",
            version="0.1.0",
            description="Job-queue platform for AI workloads. Errors are RFC 9457 problem+json with a stable `code`.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
    )
