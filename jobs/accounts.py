"""Users and API keys (the minimal store; login and roles build on it)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncConnection

from jobs.ids import uuid7

#: Every secret key starts with this, so leaked keys are easy to scan for.
KEY_PREFIX = "sk-sy-"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the user behind a key or token."""

    user_id: UUID
    email: str
    role: str
    key_id: UUID | None = None
    tier: str = "free"

    @property
    def is_admin(self) -> bool:
        """Admins see every object."""
        return self.role == "admin"


def hash_key(secret: str) -> bytes:
    """How a key is stored: sha256 (keys are 256-bit random, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode()).digest()


def new_key_secret() -> str:
    """A fresh secret API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_user(conn: AsyncConnection[Any], email: str, role: str = "user",
                      password_hash: str | None = None) -> UUID:
    """Insert a user; returns its id."""
    user_id = uuid7()
    await conn.execute(
        "INSERT INTO users (id, email, role, password_hash) VALUES (%s, %s, %s, %s)",
        (user_id, email, role, password_hash),
    )
    return user_id


async def find_user(conn: AsyncConnection[Any], email: str) -> UUID | None:
    """The id of the user with this email, if any."""
    cur = await conn.execute("SELECT id FROM users WHERE lower(email) = lower(%s)", (email,))
    row = await cur.fetchone()
    return row[0] if row else None


async def create_api_key(conn: AsyncConnection[Any], user_id: UUID, name: str) -> tuple[UUID, str]:
    """Create a key for a user; returns (key id, secret). The secret is never stored."""
    key_id, secret = uuid7(), new_key_secret()
    await conn.execute(
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s, %s)",
        (key_id, user_id, name, secret[: len(KEY_PREFIX) + 4], hash_key(secret)),
    )
    return key_id, secret


async def principal_for_key(conn: AsyncConnection[Any], secret: str) -> Principal | None:
    """The caller behind a secret key, if the key exists and is not revoked."""
    cur = await conn.execute(
        """
        SELECT u.id, u.email, u.role, u.tier, k.id, k.last_used_at < now() - interval '1 minute'
        FROM api_keys k JOIN users u ON u.id = k.user_id
        WHERE k.key_hash = %s AND k.revoked_at IS NULL AND u.disabled_at IS NULL
        """,
        (hash_key(secret),),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    user_id, email, role, tier, key_id, stale = row
    if stale is None or stale:
        # `last_used_at` is minute-grained: a hot key costs one write a minute, not one per request.
        await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (key_id,))
    return Principal(user_id=user_id, email=email, role=role, key_id=key_id, tier=tier)
