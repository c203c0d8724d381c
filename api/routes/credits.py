"""`/v1/credits`, `/v1/credits/transactions`, `/v1/usage`: the caller's money."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import Parameter

from api.paging import Page, one_more, page
from api.state import Services
from jobs import credits
from jobs.accounts import Principal
from jobs.credits import Balance, Entry, UsageRow


class TransactionList(Page[Entry, int], frozen=True, kw_only=True):
    """A page of ledger entries; `next_cursor` is the last entry's id."""


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Usage by model and day over a period (UTC days, `start` inclusive, `end` exclusive)."""

    start: date
    end: date
    data: list[UsageRow]
    total_credits: int
    object: str = "usage"


@get("/v1/credits", tags=["credits"], summary="Your credit balance")
async def get_credits(services: Services, principal: Principal) -> Balance:
    """Available and reserved credits."""
    return await credits.account(services.pool, principal.user_id)


@get("/v1/credits/transactions", tags=["credits"], summary="Your ledger entries")
async def list_transactions(
    services: Services, principal: Principal, cursor: int | None = None,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
) -> TransactionList:
    """The caller's ledger, newest first (grant, topup, reserve, settle, release, refund)."""
    rows = await credits.entries(services.pool, principal.user_id, before=cursor, limit=one_more(limit))
    return page(TransactionList, rows, limit, lambda r: r.id)


@get("/v1/usage", tags=["credits"], summary="Your usage by model and day")
async def usage_report(services: Services, principal: Principal, start: date | None = None,
                       end: date | None = None) -> UsageReport:
    """Jobs, tokens and credits spent per model per UTC day; the last 30 days by default."""
    end = end or (datetime.now(UTC).date() + timedelta(days=1))
    start = start or end - timedelta(days=30)
    data = await credits.usage_by_day(services.pool, principal.user_id, start, end)
    return UsageReport(start=start, end=end, data=data, total_credits=sum(r.credits for r in data))


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [get_credits, list_transactions, usage_report]
