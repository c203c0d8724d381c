"""The credits ledger: integer credits, reserved up front, settled exactly once.

Every operation is a ledger INSERT plus a conditional UPDATE of the account,
in the caller's transaction. The ledger's unique indexes — (job, kind) and
(payment reference, kind) — make each operation idempotent: a second
`settle` of the same job, a redelivered top-up, a retried release all insert
nothing and change nothing. A reservation is a conditional UPDATE
(`balance >= amount`), so no interleaving of concurrent submissions can ever
drive a balance negative.

    grant, topup, refund: balance += amount
    reserve:              balance -= amount, reserved += amount
    release:              reserved -= amount, balance += amount
    settle:               reserved -= amount (spent)
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import kwargs_row
from psycopg_pool import AsyncConnectionPool

from jobs.catalog import Route, Target
from jobs.errors import InsufficientCredits
from jobs.kinds import ChatCompletionInput, EmbeddingInput, Usage
from jobs.store import JobRow

CreditKind = Literal["grant", "topup", "refund"]


def ledger_model(job: JobRow) -> str:
    """What a job's ledger rows are labelled with: its model, or its kind when it has none."""
    return str(job.input.get("model") or job.kind)


def estimate_prompt_tokens(input: ChatCompletionInput) -> int:
    """A deliberately generous prompt estimate for reservations (~3 characters per token + overhead)."""
    return sum(math.ceil(len(m.content) / 3) + 8 for m in input.messages)


def cost(prompt_tokens: int, completion_tokens: int, input_price: int, output_price: int) -> int:
    """Credits for a usage at prices per million tokens, rounded up."""
    return -(-(prompt_tokens * input_price + completion_tokens * output_price) // 1_000_000)


def worst_case(input: ChatCompletionInput, route: Route) -> int:
    """The most a chat completion can cost on any target of its route (what is reserved)."""
    targets = route.targets if input.fallback else route.targets[:1]
    prompt = estimate_prompt_tokens(input)
    return max(cost(prompt, min(input.max_tokens, t.max_output), t.input_price, t.output_price) for t in targets)


def actual(usage: Usage, target: Target) -> int:
    """What a finished completion costs at the prices of the target that served it."""
    return cost(usage.prompt_tokens, usage.completion_tokens, target.input_price, target.output_price)


def estimate_embedding_tokens(input: EmbeddingInput) -> int:
    """A deliberately generous estimate of an embedding job's input tokens (~3 characters per token + 1 each)."""
    return sum(math.ceil(len(text) / 3) + 1 for text in input.texts)


def worst_case_embedding(input: EmbeddingInput, route: Route) -> int:
    """The most an embedding job can cost on any target of its route (input tokens only: what is reserved)."""
    targets = route.targets if input.fallback else route.targets[:1]
    tokens = estimate_embedding_tokens(input)
    return max(cost(tokens, 0, t.input_price, 0) for t in targets)


async def ensure_account(conn: AsyncConnection[Any], user_id: UUID) -> None:
    """Create the user's account if missing."""
    await conn.execute("INSERT INTO credit_accounts (user_id) VALUES (%s) ON CONFLICT DO NOTHING", (user_id,))


async def _ledger(conn: AsyncConnection[Any], user_id: UUID, kind: str, amount: int, *,
                  job_id: UUID | None = None, reference: str | None = None, model: str | None = None,
                  note: str | None = None) -> int | None:
    """Append a ledger row unless this (job, kind) / (reference, kind) exists; its id when appended."""
    cur = await conn.execute(
        """
        INSERT INTO credit_ledger (user_id, kind, amount, balance_after, job_id, reference, model, note)
        VALUES (%s, %s, %s, 0, %s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        (user_id, kind, amount, job_id, reference, model, note),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _stamp(conn: AsyncConnection[Any], entry_ids: list[int], balance: int) -> None:
    """Record the balance an entry left behind (known only after the account UPDATE)."""
    await conn.execute("UPDATE credit_ledger SET balance_after = %s WHERE id = ANY(%s)", (balance, entry_ids))


async def credit(conn: AsyncConnection[Any], user_id: UUID, kind: CreditKind, amount: int, *,
                 reference: str, note: str | None = None) -> int | None:
    """Add credits (grant, top-up, refund) once per `reference`; returns the new balance, None if done before."""
    await ensure_account(conn, user_id)
    entry = await _ledger(conn, user_id, kind, amount, reference=reference, note=note)
    if entry is None:
        return None
    cur = await conn.execute(
        "UPDATE credit_accounts SET balance = balance + %s, updated_at = now() WHERE user_id = %s RETURNING balance",
        (amount, user_id),
    )
    row = await cur.fetchone()
    assert row is not None
    await _stamp(conn, [entry], row[0])
    return int(row[0])


async def reserve(conn: AsyncConnection[Any], user_id: UUID, job_id: UUID, amount: int, model: str) -> None:
    """Hold `amount` for a job, or raise InsufficientCredits (the transaction must then roll back).

    One statement takes the account's row lock, moves the credits and writes the
    ledger row, so the lock — which every job of this user contends for — is
    held for that statement and the commit only. A balance that is visibly
    short fails before any lock is taken.
    """
    have = await balance_of(conn, user_id)
    if have >= amount:
        cur = await conn.execute(
            """
            WITH acct AS (
                UPDATE credit_accounts SET balance = balance - %(a)s, reserved = reserved + %(a)s, updated_at = now()
                WHERE user_id = %(u)s AND balance >= %(a)s
                RETURNING balance)
            INSERT INTO credit_ledger (user_id, kind, amount, balance_after, job_id, model)
            SELECT %(u)s, 'reserve', %(a)s, balance, %(j)s, %(m)s FROM acct
            RETURNING balance_after
            """,
            {"a": amount, "u": user_id, "j": job_id, "m": model},
        )
        if await cur.fetchone() is not None:
            return
        have = await balance_of(conn, user_id)
    raise InsufficientCredits(
        f"this job may cost up to {amount} credits; the balance is {have}", required=amount, balance=have,
    )


class Reservation(msgspec.Struct, frozen=True):
    """One job's hold, for `reserve_many`."""

    user_id: UUID
    job_id: UUID
    amount: int
    model: str


async def reserve_many(conn: AsyncConnection[Any], holds: list[Reservation]) -> set[UUID]:
    """Hold many jobs' credits in one go; returns the users whose balance cannot cover all of theirs.

    The accounts are locked in user order (two transactions never wait on each
    other in a cycle), each user's total is checked against the locked balance,
    then one UPDATE moves the totals and one INSERT writes every ledger row with
    the balance it left. Nothing is held for a user returned as short: the caller
    decides what to do with those jobs (`jobs/submitter.py` submits them one by
    one, so exactly the ones the balance cannot cover are refused).
    """
    totals: dict[UUID, int] = {}
    for hold in holds:
        totals[hold.user_id] = totals.get(hold.user_id, 0) + hold.amount
    cur = await conn.execute(
        "SELECT user_id, balance FROM credit_accounts WHERE user_id = ANY(%s) ORDER BY user_id FOR UPDATE",
        (list(totals),),
    )
    balances: dict[UUID, int] = {row[0]: row[1] for row in await cur.fetchall()}
    short = {user for user, total in totals.items() if balances.get(user, 0) < total}
    holds = [hold for hold in holds if hold.user_id not in short]
    if not holds:
        return short
    left = dict(balances)
    after = []
    for hold in holds:
        left[hold.user_id] -= hold.amount
        after.append(left[hold.user_id])
    users = [user for user in totals if user not in short]
    await conn.execute(
        """
        UPDATE credit_accounts a SET balance = a.balance - t.total, reserved = a.reserved + t.total,
                                     updated_at = now()
        FROM unnest(%s::uuid[], %s::bigint[]) AS t(user_id, total) WHERE a.user_id = t.user_id
        """,
        (users, [totals[user] for user in users]),
    )
    await conn.execute(
        """
        INSERT INTO credit_ledger (user_id, kind, amount, balance_after, job_id, model)
        SELECT user_id, 'reserve', amount, balance_after, job_id, model
        FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::uuid[], %s::text[])
             AS t(user_id, amount, balance_after, job_id, model)
        """,
        ([h.user_id for h in holds], [h.amount for h in holds], after, [h.job_id for h in holds],
         [h.model for h in holds]),
    )
    return short


async def settle(conn: AsyncConnection[Any], user_id: UUID, job_id: UUID, reserved: int, charge: int,
                 model: str | None) -> int:
    """Charge `charge` (capped at the reservation) and release the rest; once per job. Returns the charge.

    Call it last in the transaction: it takes the account's row lock. A second
    settlement of the same job changes nothing (the NOT EXISTS guard), and two
    racing ones cannot both commit (the ledger's unique (job, kind) index).
    """
    charge = max(0, min(charge, reserved))
    if reserved == 0:
        return 0
    rest = reserved - charge
    await conn.execute("UPDATE jobs SET charged_credits = %s WHERE id = %s", (charge, job_id))
    await conn.execute(
        """
        WITH acct AS (
            UPDATE credit_accounts SET reserved = reserved - %(r)s, balance = balance + %(rest)s, updated_at = now()
            WHERE user_id = %(u)s
              AND NOT EXISTS (SELECT 1 FROM credit_ledger WHERE job_id = %(j)s AND kind = 'settle')
            RETURNING balance)
        INSERT INTO credit_ledger (user_id, kind, amount, balance_after, job_id, model)
        SELECT %(u)s, entry.kind, entry.amount, acct.balance, %(j)s, %(m)s
        FROM acct, (VALUES ('settle', %(c)s::bigint), ('release', %(rest)s::bigint)) AS entry(kind, amount)
        """,
        {"r": reserved, "rest": rest, "u": user_id, "j": job_id, "m": model, "c": charge},
    )
    return charge


async def release_all(conn: AsyncConnection[Any], user_id: UUID, job_id: UUID, reserved: int,
                      model: str | None) -> None:
    """Give a failed or cancelled job's whole reservation back; once per job."""
    await settle(conn, user_id, job_id, reserved, 0, model)


# --- Batches: one reservation for all lines, settled line by line, the rest released at the end -------------


def batch_reference(batch_id: str) -> str:
    """The ledger reference of a batch's reserve and release rows."""
    return f"batch:{batch_id}"


async def reserve_batch(conn: AsyncConnection[Any], user_id: UUID, batch_id: str, amount: int) -> None:
    """Hold `amount` for a whole batch (its lines' worst cases), or raise InsufficientCredits.

    One conditional UPDATE, like `reserve`: however many batches and jobs race,
    the balance never goes below zero. Once per batch (the reference is unique).
    """
    cur = await conn.execute(
        """
        WITH acct AS (
            UPDATE credit_accounts SET balance = balance - %(a)s, reserved = reserved + %(a)s, updated_at = now()
            WHERE user_id = %(u)s AND balance >= %(a)s
              AND NOT EXISTS (SELECT 1 FROM credit_ledger WHERE reference = %(r)s AND kind = 'reserve')
            RETURNING balance)
        INSERT INTO credit_ledger (user_id, kind, amount, balance_after, reference, note)
        SELECT %(u)s, 'reserve', %(a)s, balance, %(r)s, 'batch' FROM acct
        RETURNING balance_after
        """,
        {"a": amount, "u": user_id, "r": batch_reference(batch_id)},
    )
    if await cur.fetchone() is None:
        have = await balance_of(conn, user_id)
        raise InsufficientCredits(f"this batch may cost up to {amount} credits; the balance is {have}",
                                  required=amount, balance=have)


async def settle_batch_line(conn: AsyncConnection[Any], user_id: UUID, job_id: UUID, cap: int, charge: int,
                            model: str | None) -> int:
    """Charge a finished batch line (capped at its share of the batch's reservation); once per job.

    Nothing is released per line: what the batch does not spend goes back in one
    `release_batch` when it is finalized. Returns the charge.
    """
    charge = max(0, min(charge, cap))
    await conn.execute("UPDATE jobs SET charged_credits = %s WHERE id = %s", (charge, job_id))
    await conn.execute(
        """
        WITH acct AS (
            UPDATE credit_accounts SET reserved = reserved - %(c)s, updated_at = now()
            WHERE user_id = %(u)s
              AND NOT EXISTS (SELECT 1 FROM credit_ledger WHERE job_id = %(j)s AND kind = 'settle')
            RETURNING balance)
        INSERT INTO credit_ledger (user_id, kind, amount, balance_after, job_id, model)
        SELECT %(u)s, 'settle', %(c)s, balance, %(j)s, %(m)s FROM acct
        """,
        {"c": charge, "u": user_id, "j": job_id, "m": model},
    )
    return charge


async def release_batch(conn: AsyncConnection[Any], user_id: UUID, batch_id: str, amount: int) -> bool:
    """Give back what a finished batch did not spend; once per batch. False if it was released before."""
    entry = await _ledger(conn, user_id, "release", max(0, amount), reference=batch_reference(batch_id),
                          note="batch")
    if entry is None:
        return False
    cur = await conn.execute(
        """
        UPDATE credit_accounts SET reserved = reserved - %(a)s, balance = balance + %(a)s, updated_at = now()
        WHERE user_id = %(u)s RETURNING balance
        """,
        {"a": max(0, amount), "u": user_id},
    )
    row = await cur.fetchone()
    assert row is not None
    await _stamp(conn, [entry], row[0])
    return True


async def balance_of(conn: AsyncConnection[Any], user_id: UUID) -> int:
    """Available credits."""
    cur = await conn.execute("SELECT balance FROM credit_accounts WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def held(conn: AsyncConnection[Any], job_id: UUID) -> int:
    """What a job's reservation holds, from its `reserve` row (the job's own column is a copy)."""
    cur = await conn.execute("SELECT amount FROM credit_ledger WHERE job_id = %s AND kind = 'reserve'", (job_id,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# --- Reading the ledger -----------------------------------------------------------------------------------------


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    """Credits available, and held by unfinished jobs."""

    balance: int
    reserved: int
    object: str = "credit_balance"


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One ledger entry."""

    id: int
    kind: str
    amount: int
    balance_after: int
    created_at: datetime
    job_id: UUID | None = None
    reference: str | None = None
    model: str | None = None
    note: str | None = None


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Spend of one model on one day."""

    day: date
    model: str
    jobs: int
    prompt_tokens: int
    completion_tokens: int
    credits: int


async def account(pool: AsyncConnectionPool, user_id: UUID) -> Balance:
    """A user's available and reserved credits (zero for a user without an account yet)."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT balance, reserved FROM credit_accounts WHERE user_id = %s", (user_id,))
        row = await cur.fetchone()
    return Balance(balance=row[0] if row else 0, reserved=row[1] if row else 0)


async def entries(pool: AsyncConnectionPool, user_id: UUID, *, before: int | None, limit: int) -> list[Entry]:
    """A user's ledger, newest first; `before` is the cursor (the last id of the previous page)."""
    async with pool.connection() as conn, conn.cursor(row_factory=kwargs_row(Entry)) as cur:
        await cur.execute(
            """
            SELECT id, kind, amount, balance_after, created_at, job_id, reference, model, note
            FROM credit_ledger
            WHERE user_id = %s AND (%s::bigint IS NULL OR id < %s)
            ORDER BY id DESC LIMIT %s
            """,
            (user_id, before, before, limit),
        )
        return await cur.fetchall()


async def usage_by_day(pool: AsyncConnectionPool, user_id: UUID, start: date, end: date) -> list[UsageRow]:
    """Jobs, tokens and credits charged per model per UTC day, for jobs finished in [start, end)."""
    async with pool.connection() as conn, conn.cursor(row_factory=kwargs_row(UsageRow)) as cur:
        await cur.execute(
            """
            SELECT (j.finished_at AT TIME ZONE 'UTC')::date AS day,
                   coalesce(j.input->>'model', j.kind) AS model,
                   count(*) AS jobs,
                   coalesce(sum((j.usage->>'prompt_tokens')::bigint), 0)::bigint AS prompt_tokens,
                   coalesce(sum((j.usage->>'completion_tokens')::bigint), 0)::bigint AS completion_tokens,
                   coalesce(sum(j.charged_credits), 0)::bigint AS credits
            FROM jobs j
            WHERE j.owner_id = %s AND j.finished_at >= %s AND j.finished_at < %s AND j.charged_credits IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            (user_id, start, end),
        )
        return await cur.fetchall()
