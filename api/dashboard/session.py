"""The dashboard's session: a short-lived JWT in an HttpOnly, SameSite=Strict cookie scoped to `/admin`.

The token is signed with `SWITCHYARD_JWT_SECRET` but carries its own audience
and type, so it is never an API access token and an access token is never a
session. The guard re-reads the user on every request: a demoted or disabled
admin is refused at once, whatever the cookie says; a logged-out session is
revoked (Redis, until it would have expired), so a copy of its cookie is useless.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import jwt
import msgspec
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler

from api.dashboard import PREFIX
from api.state import Services
from jobs.accounts import Principal, principal_for_user
from jobs.errors import Forbidden, InvalidToken, Unauthenticated
from jobs.ids import uuid7
from jobs.settings import Settings
from jobs.tokens import ALGORITHM, is_revoked

SESSION_COOKIE = "sy_admin_session"
#: A working day; then the operator logs in again.
SESSION_TTL_SECONDS = 8 * 3600
AUDIENCE = "switchyard-dashboard"
TOKEN_TYPE = "dashboard_session"
#: Where the guard leaves the operator for the `operator` dependency.
_STATE_KEY = "dashboard_operator"


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """The verified claims of a session cookie."""

    user_id: UUID
    expires_at: int
    #: The token's id: a logout revokes it (`jobs.tokens.revoke`), so a copied cookie dies with it.
    jti: str


def issue(settings: Settings, user_id: UUID) -> str:
    """A signed session for `user_id`, valid for `SESSION_TTL_SECONDS`."""
    now = int(time.time())
    claims = {"sub": str(user_id), "aud": AUDIENCE, "typ": TOKEN_TYPE, "jti": str(uuid7()),
              "iat": now, "exp": now + SESSION_TTL_SECONDS}
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def verify(settings: Settings, token: str) -> Session:
    """The claims of a session token.

    Raises:
        InvalidToken: forged, expired, or not a dashboard session (an API access token, say).
    """
    try:
        claims = jwt.decode(token, settings.jwt_secret, algorithms=[ALGORITHM], audience=AUDIENCE,
                            options={"require": ["sub", "aud", "exp", "iat", "jti"]})
        if claims.get("typ") != TOKEN_TYPE:
            raise InvalidToken("not a dashboard session")
        return Session(user_id=UUID(claims["sub"]), expires_at=int(claims["exp"]), jti=str(claims["jti"]))
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the dashboard session has expired; log in again") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidToken("the dashboard session is invalid; log in again") from None


def cookie(token: str, *, secure: bool) -> Cookie:
    """The session cookie (`secure` when the dashboard is served over HTTPS)."""
    return Cookie(key=SESSION_COOKIE, value=token, path=PREFIX, httponly=True, samesite="strict", secure=secure,
                  max_age=SESSION_TTL_SECONDS)


def expired_cookie(*, secure: bool) -> Cookie:
    """A cookie that makes the browser forget the session."""
    return Cookie(key=SESSION_COOKIE, value="", path=PREFIX, httponly=True, samesite="strict", secure=secure,
                  max_age=0)


def session_of(connection: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> Session:
    """The connection's verified session.

    Raises:
        Unauthenticated: no session cookie.
        InvalidToken: a cookie that is not a valid session.
    """
    token = connection.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthenticated("log in to the dashboard")
    return verify(settings, token)


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Admit a request only with a valid session of a user who is an admin now.

    Raises:
        Unauthenticated: no valid session (the error handler sends the browser to the login page).
        Forbidden: the user is no longer an admin.
    """
    services: Services = connection.app.state.services
    session = session_of(connection, services.settings)
    if await is_revoked(services.redis, session.jti):
        raise InvalidToken("this session was logged out; log in again")
    async with services.pool.connection() as conn:
        principal = await principal_for_user(conn, session.user_id)
    if principal is None:
        raise InvalidToken("the session's user no longer exists or is disabled")
    if not principal.is_admin:
        raise Forbidden("admin role required")
    connection.scope.setdefault("state", {})[_STATE_KEY] = (principal, session)


def operator_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The admin the guard admitted, if it ran and did (an error page shows the navigation then)."""
    admitted = connection.scope.get("state", {}).get(_STATE_KEY)
    return admitted[0] if admitted else None


def provide_operator(request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Dependency: the admin the guard admitted."""
    principal: Principal = request.scope["state"][_STATE_KEY][0]
    return principal


def provide_session(request: ASGIConnection[Any, Any, Any, Any]) -> Session:
    """Dependency: the session the guard verified."""
    session: Session = request.scope["state"][_STATE_KEY][1]
    return session
