"""`/v1/keys`: the caller's API keys — create (the secret is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.status_codes import HTTP_201_CREATED

from api.auth import client_ip
from api.lookup import owner_filter, parse_id
from api.state import Services
from jobs.accounts import ApiKey, Principal, list_api_keys, new_api_key, revoke_api_key
from jobs.audit import audit
from jobs.errors import NotFound


class CreateKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new key; the name says where it is used ("laptop", "ci")."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class KeyView(msgspec.Struct, frozen=True, kw_only=True):
    """An API key without its secret; `prefix` tells keys apart."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, key: ApiKey) -> KeyView:
        return cls(id=str(key.id), name=key.name, prefix=key.prefix, created_at=key.created_at,
                   last_used_at=key.last_used_at, revoked_at=key.revoked_at)


class CreatedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A new key with its secret: store `key` now, it is never shown again."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    key: str


class KeyList(msgspec.Struct, frozen=True, kw_only=True):
    """The caller's keys, newest first, revoked ones included."""

    data: list[KeyView]
    object: str = "list"


class KeyController(Controller):
    """API keys of the authenticated user (with an access token or another key)."""

    path = "/v1/keys"
    tags = ("keys",)

    @post(status_code=HTTP_201_CREATED, summary="Create an API key")
    async def create(self, request: Request[Any, Any, Any], data: CreateKey, services: Services,
                     principal: Principal) -> CreatedKey:
        """A new key; its secret `key` is in this response only (only a hash is stored)."""
        async with services.pool.connection() as conn, conn.transaction():
            key, secret = await new_api_key(conn, principal.user_id, data.name)
            await audit(conn, "key.create", actor_id=principal.user_id, target=f"key:{key.id}",
                        ip=client_ip(request), prefix=key.prefix, name=key.name)
        return CreatedKey(id=str(key.id), name=key.name, prefix=key.prefix, created_at=key.created_at, key=secret)

    @get(summary="List your API keys")
    async def list(self, services: Services, principal: Principal) -> KeyList:
        """Every key of the caller, without secrets."""
        async with services.pool.connection() as conn:
            keys = await list_api_keys(conn, principal.user_id)
        return KeyList(data=[KeyView.of(k) for k in keys])

    @delete("/{key_id:str}", summary="Revoke an API key")
    async def revoke(self, request: Request[Any, Any, Any], key_id: str, services: Services,
                     principal: Principal) -> None:
        """Revoke a key: refused at once by every API process. Another user's key is 404."""
        async with services.pool.connection() as conn, conn.transaction():
            key = await revoke_api_key(conn, parse_id(key_id, "key"), owner_filter(principal))
            if key is None:
                raise NotFound(f"key {key_id!r} not found")
            await audit(conn, "key.revoke", actor_id=principal.user_id, target=f"key:{key.id}",
                        ip=client_ip(request), prefix=key.prefix, owner_id=str(key.user_id))


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [KeyController]
