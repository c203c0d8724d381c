"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from api.state import Services


@get("/healthz", tags=["ops"], summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, 2.0)
        return name, "ok"
    except Exception as exc:
        return name, f"error: {type(exc).__name__}"


@get("/readyz", tags=["ops"], summary="Readiness: PostgreSQL and Redis reachable")
async def readyz(services: Services) -> Response[dict[str, Any]]:
    """200 when PostgreSQL and Redis answer, else 503 naming the one that does not."""

    async def postgres() -> None:
        async with services.pool.connection() as conn:
            await conn.execute("SELECT 1")

    checks = dict(await asyncio.gather(_check("postgres", postgres()), _check("redis", services.redis.ping())))
    ready = all(v == "ok" for v in checks.values())
    return Response(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE,
    )
