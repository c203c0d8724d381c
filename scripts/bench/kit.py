"""What every benchmark starts with: embedded PostgreSQL and Redis, the schema, a user with credits and a key."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from jobs.accounts import create_api_key, create_user
from jobs.credits import credit
from jobs.db import migrate
from scripts.embedded import start_postgres, start_redis
from scripts.simulator import serve_in_thread


@dataclass(frozen=True)
class BenchStack:
    """Servers of one benchmark run and the environment its processes get."""

    env: dict[str, str]
    key: str
    owner: uuid.UUID
    log_dir: Path


async def new_user(database_url: str, credits: int = 10**12) -> tuple[str, uuid.UUID]:
    """A user with `credits` and an API key: (key, user id)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        user = await create_user(conn, f"bench-{uuid.uuid4().hex[:8]}@local", "user")
        _, key = await create_api_key(conn, user, "bench")
        await credit(conn, user, "grant", credits, reference=f"bench:{user}")
    return key, user


@contextmanager
def bench_stack(**env: str) -> Iterator[BenchStack]:
    """Embedded PostgreSQL and Redis with the schema, the simulator in a thread, and a user; limits lifted.

    `env` adds to (or overrides) the processes' environment.
    """
    log_dir = Path(tempfile.mkdtemp(prefix="sy-bench-logs-"))
    database_url, stop_pg = start_postgres(Path(tempfile.mkdtemp(prefix="sy-pg-")) / "data")
    redis_url, redis_proc = start_redis(None)
    try:
        migrate(database_url)
        key, owner = asyncio.run(new_user(database_url))
        with serve_in_thread() as simulator_url:
            yield BenchStack(env={
                "PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "SIMULATOR_URL": simulator_url, "LOG_LEVEL": "INFO",
                "SWITCHYARD_MAX_FILE_BYTES": str(2 * 1024**3), "SWITCHYARD_FILE_QUOTA_BYTES": str(100 * 1024**3),
                "SWITCHYARD_RATE_LIMIT_RPM_FREE": "1000000", "SWITCHYARD_MAX_CONCURRENT_JOBS_FREE": "1000000",
                "SWITCHYARD_DATA_DIR": str(log_dir / "data"), **env,
            }, key=key, owner=owner, log_dir=log_dir)
    finally:
        redis_proc.terminate()
        stop_pg()
        print(f"\n(logs in {log_dir})", file=sys.stderr)


def percentile(values: list[float], q: int) -> float:
    """The `q`th percentile (inclusive method); the value itself for one value."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
