"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from litestar import Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from api.state import Services
from jobs.db import SCHEMA_VERSION, ping, schema_version


@get("/healthz", tags=["ops"], summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(name: str, probe: Awaitable[str | None]) -> tuple[str, str]:
    """`ok`, or `error: …` (the probe's own complaint, or the exception's type: never its text)."""
    try:
        complaint = await asyncio.wait_for(probe, 2.0)
        return name, "ok" if complaint is None else f"error: {complaint}"
    except Exception as exc:
        return name, f"error: {type(exc).__name__}"


async def _schema(services: Services) -> str | None:
    found = await schema_version(services.pool)
    if found < SCHEMA_VERSION:
        return f"database schema {found}, this version needs {SCHEMA_VERSION}: run `switchyard migrate`"
    return None


async def _answers(probe: Awaitable[Any]) -> None:
    await probe


@get("/readyz", tags=["ops"], summary="Readiness: PostgreSQL, Redis and the schema version")
async def readyz(services: Services) -> Response[dict[str, Any]]:
    """200 when PostgreSQL and Redis answer and the schema is at least this version's, else 503 naming what fails.

    A newer schema (migrated ahead of a rolling upgrade) is fine: migrations only add.
    """
    checks = dict(await asyncio.gather(_check("postgres", _answers(ping(services.pool))),
                                       _check("redis", _answers(services.redis.ping())),
                                       _check("schema", _schema(services))))
    ready = all(v == "ok" for v in checks.values())
    return Response(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE,
    )


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [healthz, readyz]
