"""`/v1/auth/*` and `/v1/me`: sign-up, login, refresh-token rotation, logout, who am I."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from api.auth import client_ip
from api.state import Services
from jobs import tokens
from jobs.accounts import (
    EMAIL_PATTERN,
    MAX_EMAIL,
    LoginRecord,
    Principal,
    User,
    get_user,
    login_record,
    normalize_email,
    set_password_hash,
    sign_up,
)
from jobs.audit import audit
from jobs.errors import AccountDisabled, InvalidCredentials, LoginLocked, NotFound
from jobs.lockout import LoginGuard
from jobs.passwords import MAX_PASSWORD, MIN_PASSWORD, hash_password, verify_password
from jobs.tokens import TokenPair

Email = Annotated[str, msgspec.Meta(max_length=MAX_EMAIL, pattern=EMAIL_PATTERN, examples=["ada@example.com"])]
Password = Annotated[str, msgspec.Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
RefreshSecret = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Registration(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new account: a unique email and a password of 8 to 256 characters."""

    email: Email
    password: Password


class Login(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Email and password."""

    email: Annotated[str, msgspec.Meta(max_length=MAX_EMAIL)]
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)]


class RefreshRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A refresh token from a login or a previous refresh."""

    refresh_token: RefreshSecret


class UserView(msgspec.Struct, frozen=True, kw_only=True):
    """A user account."""

    id: str
    email: str
    role: str
    tier: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(id=str(user.id), email=user.email, role=user.role, tier=user.tier, created_at=user.created_at)


class Me(UserView, frozen=True, kw_only=True):
    """The caller, and how it authenticated."""

    auth: Literal["api_key", "token"]


@post("/v1/auth/register", status_code=HTTP_201_CREATED, tags=["auth"], summary="Create an account")
async def register(request: Request[Any, Any, Any], data: Registration, services: Services) -> UserView:
    """Create a user with the sign-up credits. An email already registered (in any case) is 409 `email_taken`."""
    password_hash = await hash_password(data.password)
    async with services.pool.connection() as conn:
        user = await sign_up(conn, data.email, password_hash=password_hash, ip=client_ip(request),
                             grant=services.settings.signup_grant_credits)
    return UserView.of(user)


async def _check_password(services: Services, data: Login, ip: str) -> LoginRecord:
    """The user whose password this is, or 401 `invalid_credentials` (unknown email or wrong password alike)."""
    async with services.pool.connection() as conn:
        record = await login_record(conn, data.email)
    # No connection is held while argon2 works; an unknown email costs the same time as a wrong password.
    ok, rehash = await verify_password(data.password, record.password_hash if record else None)
    async with services.pool.connection() as conn:
        if record is None or not ok:
            await audit(conn, "auth.login_failed", actor_id=record.user.id if record else None,
                        target=f"email:{normalize_email(data.email)}", ip=ip)
            raise InvalidCredentials("wrong email or password")
        if rehash:
            await set_password_hash(conn, record.user.id, rehash)
    return record


@post("/v1/auth/login", status_code=HTTP_200_OK, tags=["auth"], summary="Log in with email and password")
async def login(request: Request[Any, Any, Any], data: Login, services: Services) -> TokenPair:
    """A short-lived access token (JWT) and a refresh token.

    After too many failures for the account or from the address, every attempt is
    429 `login_locked` with `Retry-After` until the lockout passes.
    """
    ip, guard = client_ip(request), LoginGuard(services.redis, services.settings)
    if wait := await guard.begin(data.email, ip):
        # `retry_after` also becomes the Retry-After header (api/errors.py).
        raise LoginLocked(f"too many failed logins; try again in {wait} s", retry_after=wait)
    record = await _check_password(services, data, ip)
    await guard.succeeded(data.email, ip)
    user = record.user
    if record.disabled:
        raise AccountDisabled("this account is disabled")
    async with services.pool.connection() as conn, conn.transaction():
        pair = await tokens.issue_tokens(conn, services.settings, user.id, user.role, user.tier)
        await audit(conn, "auth.login", actor_id=user.id, target=f"user:{user.id}", ip=ip)
    return pair


@post("/v1/auth/refresh", status_code=HTTP_200_OK, tags=["auth"], summary="Exchange a refresh token")
async def refresh(request: Request[Any, Any, Any], data: RefreshRequest, services: Services) -> TokenPair:
    """A new access token and a new refresh token; the one presented is spent.

    Presenting a spent refresh token again revokes every token of its login
    (401 `refresh_token_reused`); a revoked, expired or unknown one is 401 `invalid_refresh_token`.
    """
    async with services.pool.connection() as conn:
        return await tokens.rotate(conn, services.settings, data.refresh_token, ip=client_ip(request))


@post("/v1/auth/logout", status_code=HTTP_204_NO_CONTENT, tags=["auth"], summary="Log out")
async def logout(request: Request[Any, Any, Any], data: RefreshRequest, services: Services) -> None:
    """Revoke the refresh token and every token of its login. Access tokens expire on their own."""
    async with services.pool.connection() as conn:
        user_id = await tokens.revoke(conn, data.refresh_token)
        if user_id is not None:
            await audit(conn, "auth.logout", actor_id=user_id, target=f"user:{user_id}", ip=client_ip(request))


@get("/v1/me", tags=["auth"], summary="Who am I")
async def me(services: Services, principal: Principal) -> Me:
    """The authenticated user, and whether it came with an API key or an access token."""
    async with services.pool.connection() as conn:
        user = await get_user(conn, principal.user_id)
    if user is None:
        raise NotFound("user not found")
    return Me(**msgspec.structs.asdict(UserView.of(user)), auth="api_key" if principal.key_id else "token")


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [register, login, refresh, logout, me]
