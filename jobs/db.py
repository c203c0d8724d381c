"""PostgreSQL connections and the schema migration."""

from __future__ import annotations

import msgspec
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from jobs.settings import ROOT

#: The whole schema; idempotent.
SCHEMA_PATH = ROOT / "schema.sql"
#: The `schema_version` this code needs (schema.sql's last statement writes it).
SCHEMA_VERSION = 11

# jsonb columns decode with msgspec (faster than the stdlib json module).
set_json_loads(msgspec.json.decode)


def require_url(url: str) -> str:
    """Fail with an actionable message when DATABASE_URL is missing."""
    if not url:
        raise SystemExit("DATABASE_URL is not set (run `switchyard dev` to get an embedded PostgreSQL)")
    return url


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 10,
                    wait_seconds: float = 30.0) -> AsyncConnectionPool:
    """Open an async connection pool and wait until it can serve a connection.

    A caller waits at most `wait_seconds` for a connection before `PoolTimeout`
    (while PostgreSQL is down, that is how long each caller waits to learn it).
    """
    pool = AsyncConnectionPool(
        require_url(url), min_size=min_size, max_size=max_size, open=False, timeout=wait_seconds,
        kwargs={"autocommit": True}, name="switchyard",
    )
    await pool.open(wait=True, timeout=15)
    return pool


async def ping(pool: AsyncConnectionPool) -> None:
    """Raise unless PostgreSQL answers a trivial query."""
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")


async def schema_version(pool: AsyncConnectionPool) -> int:
    """The database's schema version (0: never migrated by a version that records it)."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        cur = await conn.execute("SELECT version FROM schema_version")
        found = await cur.fetchone()
    return int(found[0]) if found else 0


def migrate(url: str) -> None:
    """Apply `schema.sql` (safe to repeat)."""
    sql = SCHEMA_PATH.read_text()
    with psycopg.connect(require_url(url), autocommit=True) as conn:
        # One advisory lock so concurrent starters (several api pods) don't race on DDL.
        conn.execute("SELECT pg_advisory_lock(7243001)")
        try:
            conn.execute(sql.encode())
        finally:
            conn.execute("SELECT pg_advisory_unlock(7243001)")
