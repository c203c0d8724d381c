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

from api import dashboard
from api.auth import provide_principal, provide_services
from api.errors import openapi_error_table, problem_handler
from api.middleware import request_id_middleware
from api.openapi import document_errors
from api.routes import route_handlers
from api.state import Services
from api.streaming import TimedSubscriber
from jobs import metrics
from jobs.broker import make_broker
from jobs.catalog import load_catalog
from jobs.logging import setup_logging
from jobs.ratelimit import RateLimiter
from jobs.redis import async_client
from jobs.settings import DEV_JWT_SECRET, Settings, get_settings
from jobs.states import Queue
from jobs.tuning import tune_gc


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API for `settings` (default: from the environment)."""
    settings = settings or get_settings()
    setup_logging(settings, "api")
    if settings.jwt_secret == DEV_JWT_SECRET:
        logger.warning("SWITCHYARD_JWT_SECRET is the development default: set a secret before exposing this API")
    catalog = load_catalog(settings)
    redis = async_client(settings.redis_url or "redis://unset")
    channels = ChannelsPlugin(
        backend=RedisChannelsPubSubBackend(redis=redis),
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_class=TimedSubscriber,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await Services.connect(settings, pool_size=(2, 20), redis=redis,
                                          db_wait_seconds=settings.api_db_wait_seconds,
                                          broker=make_broker(settings, middleware=[]), catalog=catalog,
                                          limiter=RateLimiter(redis))
        app.state.services = services
        metrics.reap_dead_processes()  # uvicorn restarts a crashed worker: its live gauges go
        metrics.declare(queues=[str(q) for q in Queue], targets=list(catalog.targets()))
        tune_gc()
        try:
            yield
        finally:
            services.broker.close()
            await services.close()

    app = Litestar(
        route_handlers=route_handlers(),
        dependencies={"services": Provide(provide_services, sync_to_thread=False),
                      "principal": Provide(provide_principal)},
        plugins=[channels],
        lifespan=[lifespan],
        middleware=[request_id_middleware],
        exception_handlers={Exception: problem_handler},
        request_max_body_size=settings.max_body_bytes,
        # The operator dashboard (/admin): its templates, and CSRF checks on its form posts only.
        template_config=dashboard.template_config(),
        csrf_config=dashboard.csrf_config(settings),
        openapi_config=OpenAPIConfig(
            title="Switchyard",
            version="0.1.0",
            description="Job-queue platform for AI workloads. Errors are RFC 9457 problem+json with a stable "
                        "`code` and the `request_id`:\n\n" + openapi_error_table(),
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
    )
    document_errors(app)
    return app
