"""`/v1/credits`, `/v1/credits/transactions`, `/v1/usage`: the caller's money."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import Parameter

from api.state import Services
from jobs.accounts import Principal


class CreditBalance(msgspec.Struct, frozen=True, kw_only=True):
    """Credits available, and held by unfinished jobs."""

    balance: int
    reserved: int
    object: str = "credit_balance"


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """One ledger entry."""

    id: int
    kind: str
    amount: int
    balance_after: int
    created_at: datetime
    job_id: str | None = None
    reference: str | None = None
    model: str | None = None
    note: str | None = None


class TransactionList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of ledger entries, newest first; pass `next_cursor` as `cursor` for the next page."""

    data: list[Transaction]
    has_more: bool
    next_cursor: int | None
    object: str = "list"


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Spend of one model on one day."""

    day: date
    model: str
    jobs: int
    prompt_tokens: int
    completion_tokens: int
    credits: int


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Usage by model and day over a period (UTC days, `start` inclusive, `end` exclusive)."""

    start: date
    end: date
    data: list[UsageRow]
    total_credits: int
    object: str = "usage"


@get("/v1/credits", tags=["credits"], summary="Your credit balance")
async def get_credits(services: Services, principal: Principal) -> CreditBalance:
    """Available and reserved credits."""
    async with services.pool.connection() as conn:
        cur = await conn.execute("SELECT balance, reserved FROM credit_accounts WHERE user_id = %s",
                                 (principal.user_id,))
        row = await cur.fetchone()
    return CreditBalance(balance=row[0] if row else 0, reserved=row[1] if row else 0)


@get("/v1/credits/transactions", tags=["credits"], summary="Your ledger entries")
async def list_transactions(
    services: Services, principal: Principal, cursor: int | None = None,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
) -> TransactionList:
    """The caller's ledger, newest first (grant, topup, reserve, settle, release, refund)."""
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT id, kind, amount, balance_after, created_at, job_id, reference, model, note
            FROM credit_ledger
            WHERE user_id = %s AND (%s::bigint IS NULL OR id < %s)
            ORDER BY id DESC LIMIT %s
            """,
            (principal.user_id, cursor, cursor, limit + 1),
        )
        rows = await cur.fetchall()
    page = [Transaction(id=r[0], kind=r[1], amount=r[2], balance_after=r[3], created_at=r[4],
                        job_id=str(r[5]) if r[5] else None, reference=r[6], model=r[7], note=r[8])
            for r in rows[:limit]]
    has_more = len(rows) > limit
    return TransactionList(data=page, has_more=has_more, next_cursor=page[-1].id if has_more else None)


@get("/v1/usage", tags=["credits"], summary="Your usage by model and day")
async def usage_report(services: Services, principal: Principal, start: date | None = None,
                       end: date | None = None) -> UsageReport:
    """Jobs, tokens and credits spent per model per UTC day; the last 30 days by default."""
    end = end or (datetime.now(UTC).date() + timedelta(days=1))
    start = start or end - timedelta(days=30)
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT (j.finished_at AT TIME ZONE 'UTC')::date AS day,
                   coalesce(j.payload->>'model', j.kind) AS model,
                   count(*),
                   coalesce(sum((j.usage->>'prompt_tokens')::bigint), 0)::bigint,
                   coalesce(sum((j.usage->>'completion_tokens')::bigint), 0)::bigint,
                   coalesce(sum(j.charged_credits), 0)::bigint
            FROM jobs j
            WHERE j.owner_id = %s AND j.finished_at >= %s AND j.finished_at < %s AND j.charged_credits IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            (principal.user_id, start, end),
        )
        rows = await cur.fetchall()
    data = [UsageRow(day=r[0], model=r[1], jobs=r[2], prompt_tokens=r[3], completion_tokens=r[4], credits=r[5])
            for r in rows]
    return UsageReport(start=start, end=end, data=data, total_credits=sum(r.credits for r in data))


#: Route handlers of this module, registered by api/app.py.
ROUTES: list[Any] = [get_credits, list_transactions, usage_report]
