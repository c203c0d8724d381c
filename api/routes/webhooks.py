"""`/v1/webhooks/secret`: the key that signs the caller's completion webhooks (Standard Webhooks `whsec_…`).

Callbacks (`callback_url` on jobs and batches) are signed with one secret per
user, created on first use; rotating it signs every delivery from then on with
the new one. How to verify a delivery: docs/webhooks.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.status_codes import HTTP_200_OK

from api.auth import client_ip
from api.state import Services
from jobs import webhooks
from jobs.accounts import Principal
from jobs.audit import audit


class SecretView(msgspec.Struct, frozen=True, kw_only=True):
    """Your webhook signing secret: pass it to `standardwebhooks.Webhook(secret)` to verify deliveries."""

    secret: str
    created_at: datetime
    object: str = "webhook_secret"

    @classmethod
    def of(cls, found: webhooks.WebhookSecret) -> SecretView:
        return cls(secret=found.secret, created_at=found.created_at)


class WebhookSecretController(Controller):
    """The authenticated user's webhook signing secret."""

    path = "/v1/webhooks/secret"
    tags = ("webhooks",)

    @get(summary="Your webhook signing secret")
    async def get_secret(self, services: Services, principal: Principal) -> SecretView:
        """The `whsec_…` secret that signs your callbacks; created on the first call."""
        async with services.pool.connection() as conn:
            return SecretView.of(await webhooks.current_secret(conn, principal.user_id))

    @post("/rotate", status_code=HTTP_200_OK, summary="Rotate your webhook signing secret")
    async def rotate(self, request: Request[Any, Any, Any], services: Services, principal: Principal) -> SecretView:
        """A new secret; deliveries from now on (retries of earlier events included) are signed with it only."""
        async with services.pool.connection() as conn, conn.transaction():
            found = await webhooks.rotate(conn, principal.user_id)
            await audit(conn, "webhook_secret.rotate", actor_id=principal.user_id,
                        target=f"user:{principal.user_id}", ip=client_ip(request))
        return SecretView.of(found)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [WebhookSecretController]
