"""The audit log: who did what, for logins, keys, grants, top-ups and admin actions."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncConnection


async def audit(conn: AsyncConnection[Any], action: str, *, actor_id: UUID | None = None,
                target: str | None = None, ip: str | None = None, **details: Any) -> None:
    """Append one audit row (never secrets: pass ids and prefixes, not keys or passwords)."""
    await conn.execute(
        "INSERT INTO audit_log (actor_id, action, target, ip, details) VALUES (%s, %s, %s, %s, %s::jsonb)",
        (actor_id, action, target, ip, msgspec.json.encode(details).decode() if details else None),
    )
