"""Authentication: `Authorization: Bearer sk-…` API keys.

Browsers cannot set headers on WebSocket or EventSource requests, so the
streaming routes also accept the key as `?access_token=` (never logged: the
request log line carries the path only).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException

from api.limits import spend_request
from api.state import Services
from jobs.accounts import KEY_PREFIX, Principal, principal_for_key


def provide_services(state: State) -> Services:
    """The process's shared clients."""
    services: Services = state.services
    return services


def _bearer(connection: ASGIConnection[Any, Any, Any, Any], allow_query: bool) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if allow_query:
        return connection.query_params.get("access_token")
    return None


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], services: Services,
                       *, allow_query: bool = False) -> Principal:
    """The caller, or 401."""
    token = _bearer(connection, allow_query)
    if not token:
        raise NotAuthorizedException("missing credentials: send `Authorization: Bearer sk-…`")
    principal = None
    if token.startswith(KEY_PREFIX):
        async with services.pool.connection() as conn:
            principal = await principal_for_key(conn, token)
    if principal is None:
        raise NotAuthorizedException("invalid or revoked API key")
    await spend_request(connection, services, principal)
    return principal


async def provide_principal(request: ASGIConnection[Any, Any, Any, Any], services: Services) -> Principal:
    """Dependency: the authenticated caller (header only)."""
    return await authenticate(request, services)


async def provide_stream_principal(request: ASGIConnection[Any, Any, Any, Any], services: Services) -> Principal:
    """Dependency for streaming routes: header, or `?access_token=`."""
    return await authenticate(request, services, allow_query=True)
