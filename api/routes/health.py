"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from litestar import Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from api.state import Services
from jobs.db import ping


@get("/healthz", tags=["ops"], summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(name: str, probe: Awaitable[Any]) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, 2.0)
        return name, "ok"
    except Exception as exc:
        return name, f"error: {type(exc).__name__}"


@get("/readyz", tags=["ops"], summary="Readiness: PostgreSQL and Redis reachable")
async def readyz(services: Services) -> Response[dict[str, Any]]:
    """200 when PostgreSQL and Redis answer, else 503 naming the one that does not."""
    checks = dict(await asyncio.gather(_check("postgres", ping(services.pool)),
                                       _check("redis", services.redis.ping())))
    ready = all(v == "ok" for v in checks.values())
    return Response(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE,
    )


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [healthz, readyz]
