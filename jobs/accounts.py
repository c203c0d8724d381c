"""Users and API keys: sign-up, login lookups, the caller behind a key or token, key management."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from jobs.audit import audit
from jobs.credits import credit
from jobs.errors import EmailTaken
from jobs.ids import uuid7

#: Every secret key starts with this, so leaked keys are easy to scan for.
KEY_PREFIX = "sk-sy-"
#: Characters of the secret kept (and shown) to tell keys apart: the prefix plus 4 random characters.
SHOWN_KEY_CHARS = len(KEY_PREFIX) + 4
#: A sane address: one @, no spaces, a dot in the domain. Deliverability is not our business.
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$"
MAX_EMAIL = 254


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


class User(msgspec.Struct, frozen=True, kw_only=True):
    """A user as stored (without the password hash)."""

    id: UUID
    email: str
    role: str
    tier: str
    created_at: datetime


class LoginRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a login needs to know about the user behind an email."""

    user: User
    password_hash: str | None
    disabled: bool


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as stored: never the secret, only its first characters."""

    id: UUID
    user_id: UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


_USER_COLUMNS = "id, email, role, tier, created_at"
_KEY_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, revoked_at"


def _user(row: Any) -> User:
    return User(id=row[0], email=row[1], role=row[2], tier=row[3], created_at=row[4])


def _key(row: Any) -> ApiKey:
    return ApiKey(id=row[0], user_id=row[1], name=row[2], prefix=row[3], created_at=row[4],
                  last_used_at=row[5], revoked_at=row[6])


def normalize_email(email: str) -> str:
    """Emails are compared and stored lower-cased, without surrounding spaces."""
    return email.strip().lower()


def hash_key(secret: str) -> bytes:
    """How a key is stored: sha256 (keys are 256-bit random, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode()).digest()


def new_key_secret() -> str:
    """A fresh secret API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def _insert_user(conn: AsyncConnection[Any], email: str, role: str, password_hash: str | None) -> User:
    cur = await conn.execute(
        f"""
        INSERT INTO users (id, email, role, password_hash) VALUES (%s, %s, %s, %s)
        ON CONFLICT ((lower(email))) DO NOTHING
        RETURNING {_USER_COLUMNS}
        """,
        (uuid7(), normalize_email(email), role, password_hash),
    )
    row = await cur.fetchone()
    if row is None:
        raise EmailTaken(f"a user with email {normalize_email(email)!r} already exists")
    return _user(row)


async def create_user(conn: AsyncConnection[Any], email: str, role: str = "user",
                      password_hash: str | None = None) -> UUID:
    """Insert a user (email lower-cased); returns its id. Raises EmailTaken."""
    return (await _insert_user(conn, email, role, password_hash)).id


async def sign_up(conn: AsyncConnection[Any], email: str, *, password_hash: str | None, grant: int,
                  role: str = "user", ip: str | None = None, via: str = "api") -> User:
    """Create a user with its sign-up credits and an audit row, all in one transaction. Raises EmailTaken."""
    async with conn.transaction():
        user = await _insert_user(conn, email, role, password_hash)
        if grant > 0:
            await credit(conn, user.id, "grant", grant, reference=f"signup:{user.id}", note="sign-up grant")
        await audit(conn, "user.register", actor_id=user.id, target=f"user:{user.id}", ip=ip, via=via, role=role)
    return user


async def find_user(conn: AsyncConnection[Any], email: str) -> UUID | None:
    """The id of the user with this email, if any."""
    cur = await conn.execute("SELECT id FROM users WHERE lower(email) = lower(%s)", (email.strip(),))
    row = await cur.fetchone()
    return row[0] if row else None


async def user_exists(conn: AsyncConnection[Any], user_id: UUID) -> bool:
    """Whether a user with this id exists."""
    cur = await conn.execute("SELECT 1 FROM users WHERE id = %s", (user_id,))
    return await cur.fetchone() is not None


async def get_user(conn: AsyncConnection[Any], user_id: UUID) -> User | None:
    """A user by id."""
    cur = await conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s", (user_id,))
    row = await cur.fetchone()
    return _user(row) if row else None


async def login_record(conn: AsyncConnection[Any], email: str) -> LoginRecord | None:
    """The user behind an email with its password hash, for a login."""
    cur = await conn.execute(
        f"SELECT {_USER_COLUMNS}, password_hash, disabled_at IS NOT NULL FROM users WHERE lower(email) = lower(%s)",
        (email.strip(),),
    )
    row = await cur.fetchone()
    return LoginRecord(user=_user(row), password_hash=row[5], disabled=row[6]) if row else None


async def set_password_hash(conn: AsyncConnection[Any], user_id: UUID, password_hash: str) -> None:
    """Replace a user's password hash (after a rehash with newer parameters)."""
    await conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id))


async def principal_for_user(conn: AsyncConnection[Any], user_id: UUID) -> Principal | None:
    """The caller behind an access token, if the user still exists and is not disabled."""
    cur = await conn.execute(
        "SELECT email, role, tier FROM users WHERE id = %s AND disabled_at IS NULL", (user_id,),
    )
    row = await cur.fetchone()
    return Principal(user_id=user_id, email=row[0], role=row[1], tier=row[2]) if row else None


async def new_api_key(conn: AsyncConnection[Any], user_id: UUID, name: str) -> tuple[ApiKey, str]:
    """Create a key for a user; returns (key, secret). The secret is never stored."""
    secret = new_key_secret()
    cur = await conn.execute(
        f"""
        INSERT INTO api_keys (id, user_id, name, prefix, key_hash) VALUES (%s, %s, %s, %s, %s)
        RETURNING {_KEY_COLUMNS}
        """,
        (uuid7(), user_id, name, secret[:SHOWN_KEY_CHARS], hash_key(secret)),
    )
    row = await cur.fetchone()
    assert row is not None
    return _key(row), secret


async def create_api_key(conn: AsyncConnection[Any], user_id: UUID, name: str) -> tuple[UUID, str]:
    """Create a key for a user; returns (key id, secret)."""
    key, secret = await new_api_key(conn, user_id, name)
    return key.id, secret


async def list_api_keys(conn: AsyncConnection[Any], user_id: UUID) -> list[ApiKey]:
    """A user's keys, newest first, revoked ones included."""
    cur = await conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = %s ORDER BY created_at DESC, id DESC", (user_id,),
    )
    return [_key(row) for row in await cur.fetchall()]


async def revoke_api_key(conn: AsyncConnection[Any], key_id: UUID, owner_id: UUID | None) -> ApiKey | None:
    """Revoke a key of `owner_id` (None: anyone's, for admins); the key, or None if there is no such key.

    Revoking twice is harmless: the first `revoked_at` stays.
    """
    cur = await conn.execute(
        f"""
        UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
        WHERE id = %s AND (%s::uuid IS NULL OR user_id = %s)
        RETURNING {_KEY_COLUMNS}
        """,
        (key_id, owner_id, owner_id),
    )
    row = await cur.fetchone()
    return _key(row) if row else None


async def principal_for_key(conn: AsyncConnection[Any], secret: str) -> Principal | None:
    """The caller behind a secret key, if the key exists and is not revoked.

    Looked up in the database on every request, never cached: a revoked key stops
    working at once on every API process.
    """
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


class UserSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A user as operators list them: identity and credits."""

    id: UUID
    email: str
    role: str
    tier: str
    created_at: datetime
    balance: int
    reserved: int


async def list_users(pool: AsyncConnectionPool, *, email: str | None, before: UUID | None,
                     limit: int) -> list[UserSummary]:
    """Users whose e-mail contains `email` (any when None), newest first, with their balances."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT u.id, u.email, u.role, u.tier, u.created_at, coalesce(a.balance, 0), coalesce(a.reserved, 0)
            FROM users u LEFT JOIN credit_accounts a ON a.user_id = u.id
            WHERE (%(email)s::text IS NULL OR lower(u.email) LIKE '%%' || lower(%(email)s) || '%%')
              AND (%(before)s::uuid IS NULL OR u.id < %(before)s)
            ORDER BY u.id DESC LIMIT %(limit)s
            """,
            {"email": email, "before": before, "limit": limit},
        )
        rows = await cur.fetchall()
    return [UserSummary(id=r[0], email=r[1], role=r[2], tier=r[3], created_at=r[4], balance=r[5], reserved=r[6])
            for r in rows]
