"""Access tokens (JWT HS256, short-lived) and rotating refresh tokens (opaque, stored hashed).

A login starts a refresh-token *family*. Each refresh spends the presented
token (a conditional UPDATE: only an unused, unrevoked, unexpired token is
spent) and issues the next one in the same family. Presenting a token that was
already spent means two parties hold it — the client and a thief — so the
whole family is revoked and both must log in again (OAuth 2.0 Security BCP,
"refresh token rotation"). Operations on one family are serialised by an
advisory lock, so a revocation can never miss a token being issued at the
same moment.
Errors (`jobs/errors.py`): InvalidToken, InvalidRefreshToken, RefreshTokenReused.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Literal
from uuid import UUID

import jwt
import msgspec
from psycopg import AsyncConnection
from redis.asyncio import Redis

from jobs.audit import audit
from jobs.errors import InvalidRefreshToken, InvalidToken, RefreshTokenReused
from jobs.ids import uuid7
from jobs.settings import Settings

#: Refresh tokens start with this (tells them apart from keys and JWTs at a glance).
REFRESH_PREFIX = "rt-"
ALGORITHM = "HS256"
#: First key of the advisory locks that serialise the operations on one refresh-token family.
_FAMILY_LOCK = 7243002


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    """What a login or a refresh returns (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The verified claims of an access token."""

    user_id: UUID
    role: str
    tier: str
    jti: str
    expires_at: int


def encode_access_token(settings: Settings, user_id: UUID, role: str, tier: str) -> str:
    """A signed access token for a user, valid for `access_token_ttl_seconds`."""
    now = int(time.time())
    claims = {"sub": str(user_id), "role": role, "tier": tier, "typ": "access", "jti": str(uuid7()),
              "iat": now, "exp": now + settings.access_token_ttl_seconds}
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """Verify signature, expiry and type of an access token. Raises InvalidToken."""
    try:
        claims = _decode(settings, token)
        if claims.get("typ") != "access":
            raise InvalidToken("not an access token")
        return AccessClaims(user_id=UUID(claims["sub"]), role=str(claims.get("role", "user")),
                            tier=str(claims.get("tier", "free")), jti=str(claims["jti"]), expires_at=claims["exp"])
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the access token has expired; refresh it or log in again") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidToken("the access token is invalid") from None


def _decode(settings: Settings, token: str) -> dict[str, Any]:
    """The verified claims, signed with the current secret or (during a rotation) the previous one."""
    try:
        return jwt.decode(token, settings.jwt_secret, algorithms=[ALGORITHM],
                          options={"require": ["sub", "exp", "iat", "jti"]})
    except jwt.InvalidSignatureError:
        if not settings.jwt_previous_secret:
            raise
        return jwt.decode(token, settings.jwt_previous_secret, algorithms=[ALGORITHM],
                          options={"require": ["sub", "exp", "iat", "jti"]})


def _hash(secret: str) -> bytes:
    # Refresh tokens are 256-bit random, so sha256 is enough (as for API keys).
    return hashlib.sha256(secret.encode()).digest()


async def issue_tokens(conn: AsyncConnection[Any], settings: Settings, user_id: UUID, role: str, tier: str,
                       family_id: UUID | None = None) -> TokenPair:
    """An access token and a refresh token: the next of `family_id`, or the first of a new family."""
    refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        """
        INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
        VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))
        """,
        (uuid7(), user_id, family_id or uuid7(), _hash(refresh), settings.refresh_token_ttl_seconds),
    )
    return TokenPair(access_token=encode_access_token(settings, user_id, role, tier),
                     expires_in=settings.access_token_ttl_seconds, refresh_token=refresh)


async def _lock_family(conn: AsyncConnection[Any], token_hash: bytes) -> tuple[UUID, UUID] | None:
    """(family id, user id) of a token, with the family locked until the transaction ends."""
    cur = await conn.execute("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = %s", (token_hash,))
    row = await cur.fetchone()
    if row is not None:
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))", (_FAMILY_LOCK, row[0]))
    return (row[0], row[1]) if row else None


async def _revoke_family(conn: AsyncConnection[Any], family_id: UUID) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = %s AND revoked_at IS NULL", (family_id,),
    )


async def rotate(conn: AsyncConnection[Any], settings: Settings, refresh_token: str,
                 *, ip: str | None = None) -> TokenPair:
    """Spend a refresh token for a new pair. Of concurrent refreshes with one token, exactly one wins.

    Raises InvalidRefreshToken, or RefreshTokenReused after revoking the family
    (committed: the connection must not be inside an outer transaction).
    """
    token_hash = _hash(refresh_token)
    async with conn.transaction():
        owner = await _lock_family(conn, token_hash)
        if owner is None:
            raise InvalidRefreshToken("unknown refresh token; log in again")
        family_id, user_id = owner
        cur = await conn.execute(
            """
            UPDATE refresh_tokens t SET used_at = now()
            FROM users u
            WHERE t.token_hash = %s AND u.id = t.user_id AND u.disabled_at IS NULL
              AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()
            RETURNING u.role, u.tier
            """,
            (token_hash,),
        )
        spent = await cur.fetchone()
        if spent is not None:
            return await issue_tokens(conn, settings, user_id, spent[0], spent[1], family_id)
        cur = await conn.execute("SELECT used_at IS NOT NULL FROM refresh_tokens WHERE token_hash = %s",
                                 (token_hash,))
        used = await cur.fetchone()
        if not (used and used[0]):
            raise InvalidRefreshToken("the refresh token is revoked or expired; log in again")
        await _revoke_family(conn, family_id)
        await audit(conn, "auth.refresh_reused", actor_id=user_id, target=f"refresh_family:{family_id}", ip=ip)
    raise RefreshTokenReused("this refresh token was already used; every session it started is revoked. "
                             "Log in again")


async def revoke(conn: AsyncConnection[Any], refresh_token: str) -> UUID | None:
    """Revoke the family of a refresh token (logout); the user id, None for an unknown token."""
    async with conn.transaction():
        owner = await _lock_family(conn, _hash(refresh_token))
        if owner is not None:
            await _revoke_family(conn, owner[0])
    return owner[1] if owner else None


def _revoked_key(jti: str) -> str:
    return f"sy:revoked:{jti}"


async def revoke_signed(redis: Redis, jti: str, expires_at: int) -> None:
    """Refuse the signed token `jti` until it would have expired anyway (a logout)."""
    ttl = max(1, expires_at - int(time.time()))
    await redis.set(_revoked_key(jti), b"1", ex=ttl)


async def is_revoked(redis: Redis, jti: str) -> bool:
    """Whether `jti` was revoked."""
    return bool(await redis.exists(_revoked_key(jti)))
