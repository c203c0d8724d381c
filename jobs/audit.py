"""The audit log: who did what, for logins, keys, grants, top-ups and admin actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import kwargs_row
from psycopg_pool import AsyncConnectionPool


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One audit row."""

    id: int
    at: datetime
    action: str
    actor_id: UUID | None
    target: str | None
    ip: str | None
    details: dict[str, Any] | None


async def audit(conn: AsyncConnection[Any], action: str, *, actor_id: UUID | None = None,
                target: str | None = None, ip: str | None = None, **details: Any) -> None:
    """Append one audit row (never secrets: pass ids and prefixes, not keys or passwords)."""
    await conn.execute(
        "INSERT INTO audit_log (actor_id, action, target, ip, details) VALUES (%s, %s, %s, %s, %s::jsonb)",
        (actor_id, action, target, ip, msgspec.json.encode(details).decode() if details else None),
    )


async def entries(pool: AsyncConnectionPool, *, action: str | None = None, actor_id: UUID | None = None,
                  before: int | None = None, limit: int = 50) -> list[AuditEntry]:
    """Audit rows, newest first, optionally of one action or actor; `before` is the cursor (an id)."""
    async with pool.connection() as conn, conn.cursor(row_factory=kwargs_row(AuditEntry)) as cur:
        await cur.execute(
            """
            SELECT id, at, action, actor_id, target, ip, details FROM audit_log
            WHERE (%(action)s::text IS NULL OR action = %(action)s)
              AND (%(actor)s::uuid IS NULL OR actor_id = %(actor)s)
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s
            """,
            {"action": action, "actor": actor_id, "before": before, "limit": limit},
        )
        return await cur.fetchall()
