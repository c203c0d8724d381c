"""Authentication: `Authorization: Bearer …` with an API key (`sk-sy-…`) or a JWT access token.

Both are checked against the database on every request — a revoked key or a
disabled user is refused at once by every API process; nothing is cached.
Browsers cannot set headers on WebSocket or EventSource requests, so the
streaming routes also accept the credential as `?access_token=` (never logged:
the request log line carries the path only). Every authenticated request then
spends from the caller's rate limit.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import State

from api.limits import spend_request
from api.state import Services
from jobs.accounts import KEY_PREFIX, Principal, principal_for_key, principal_for_user
from jobs.errors import Forbidden, InvalidApiKey, InvalidToken, Unauthenticated
from jobs.tokens import decode_access_token


def provide_services(state: State) -> Services:
    """The process's shared clients."""
    services: Services = state.services
    return services


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address of the connection (the ASGI scope's client; no forwarding headers are trusted)."""
    return connection.client.host if connection.client else "unknown"


def _bearer(connection: ASGIConnection[Any, Any, Any, Any], allow_query: bool) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if allow_query:
        return connection.query_params.get("access_token")
    return None


async def _principal(services: Services, token: str) -> Principal:
    if token.startswith(KEY_PREFIX):
        async with services.pool.connection() as conn:
            principal = await principal_for_key(conn, token)
        if principal is None:
            raise InvalidApiKey("invalid or revoked API key")
        return principal
    claims = decode_access_token(services.settings, token)
    async with services.pool.connection() as conn:
        principal = await principal_for_user(conn, claims.user_id)
    if principal is None:
        raise InvalidToken("the token's user no longer exists or is disabled")
    return principal


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], services: Services,
                       *, allow_query: bool = False) -> Principal:
    """The caller, or 401."""
    token = _bearer(connection, allow_query)
    if not token:
        raise Unauthenticated("missing credentials: send `Authorization: Bearer <API key or access token>`")
    principal = await _principal(services, token)
    await spend_request(connection, services, principal)
    return principal


async def provide_principal(request: ASGIConnection[Any, Any, Any, Any], services: Services) -> Principal:
    """Dependency: the authenticated caller (header only)."""
    return await authenticate(request, services)


async def provide_stream_principal(request: ASGIConnection[Any, Any, Any, Any], services: Services) -> Principal:
    """Dependency for streaming routes: header, or `?access_token=`."""
    return await authenticate(request, services, allow_query=True)


async def provide_admin(principal: Principal) -> Principal:
    """Dependency: the caller, if an admin; else 403 `forbidden`."""
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return principal
