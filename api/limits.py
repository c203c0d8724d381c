"""Request rate limits per API key (or token) by tier, shared by every API process.

Called from authentication, so every authenticated request spends from its
key's per-minute budget. Responses carry `RateLimit-Limit`,
`RateLimit-Remaining` and `RateLimit-Reset` (draft RFC "RateLimit header
fields"); a refused request is 429 `rate_limited` with `Retry-After`.
"""

from __future__ import annotations

import math
from typing import Any

from litestar.connection import ASGIConnection

from api.middleware import add_response_header
from api.state import Services
from jobs.accounts import Principal
from jobs.errors import TooManyRequests


def requests_per_minute(services: Services, principal: Principal) -> int:
    """The principal's budget: admins are unlimited (0), others by tier."""
    if principal.is_admin:
        return 0
    settings = services.settings
    return settings.rate_limit_rpm_pro if principal.tier == "pro" else settings.rate_limit_rpm_free


async def spend_request(connection: ASGIConnection[Any, Any, Any, Any], services: Services,
                        principal: Principal) -> None:
    """Spend one request of the caller's budget, or raise 429."""
    limit = requests_per_minute(services, principal)
    if not limit:
        return
    subject = f"key:{principal.key_id}" if principal.key_id else f"user:{principal.user_id}"
    budget = await services.limiter.spend(subject, rpm=limit)
    add_response_header(connection, "RateLimit-Limit", str(limit))
    add_response_header(connection, "RateLimit-Remaining", str(budget.remaining))
    add_response_header(connection, "RateLimit-Reset", str(math.ceil(budget.reset)))
    if budget.wait > 0:
        raise TooManyRequests(f"more than {limit} requests per minute for this key; "
                              f"retry in {math.ceil(budget.wait)} s", retry_after=math.ceil(budget.wait))
