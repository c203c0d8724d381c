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
from typing import Any, Literal
from uuid import UUID

from psycopg import AsyncConnection

from jobs.errors import SwitchyardError
from jobs.kinds import ChatCompletionInput
from jobs.routes import Route, Target

CreditKind = Literal["grant", "topup", "refund"]


class InsufficientCredits(SwitchyardError):
    """The balance cannot cover the job's worst-case cost."""

    code = "insufficient_credits"
    status = 402


def estimate_prompt_tokens(spec: ChatCompletionInput) -> int:
    """A deliberately generous prompt estimate for reservations (~3 characters per token + overhead)."""
    return sum(math.ceil(len(m.content) / 3) + 8 for m in spec.messages)


def cost(prompt_tokens: int, completion_tokens: int, input_price: int, output_price: int) -> int:
    """Credits for a usage at prices per million tokens, rounded up."""
    return -(-(prompt_tokens * input_price + completion_tokens * output_price) // 1_000_000)


def worst_case(spec: ChatCompletionInput, route: Route) -> int:
    """The most a chat completion can cost on any target of its route (what is reserved)."""
    targets = route.targets if spec.fallback else route.targets[:1]
    prompt = estimate_prompt_tokens(spec)
    return max(cost(prompt, min(spec.max_tokens, t.max_output), t.input_price, t.output_price) for t in targets)


def actual(usage: dict[str, Any], target: Target) -> int:
    """What a finished completion costs at the prices of the target that served it."""
    return cost(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                target.input_price, target.output_price)


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
    """Hold `amount` for a job, or raise InsufficientCredits (the transaction must then roll back)."""
    cur = await conn.execute(
        """
        UPDATE credit_accounts SET balance = balance - %s, reserved = reserved + %s, updated_at = now()
        WHERE user_id = %s AND balance >= %s
        RETURNING balance
        """,
        (amount, amount, user_id, amount),
    )
    row = await cur.fetchone()
    if row is None:
        have = await balance_of(conn, user_id)
        raise InsufficientCredits(
            f"this job may cost up to {amount} credits; the balance is {have}",
            required=amount, balance=have,
        )
    await conn.execute("UPDATE jobs SET reserved_credits = %s WHERE id = %s", (amount, job_id))
    entry = await _ledger(conn, user_id, "reserve", amount, job_id=job_id, model=model)
    assert entry is not None, "a job is reserved once, at submission"
    await _stamp(conn, [entry], row[0])


async def settle(conn: AsyncConnection[Any], user_id: UUID, job_id: UUID, reserved: int, charge: int,
                 model: str | None) -> int:
    """Charge `charge` (capped at the reservation) and release the rest; once per job. Returns the charge."""
    charge = max(0, min(charge, reserved))
    if reserved == 0:
        return 0
    settled = await _ledger(conn, user_id, "settle", charge, job_id=job_id, model=model)
    if settled is None:
        return charge  # settled before: a redelivery, nothing to do
    rest = reserved - charge
    released = await _ledger(conn, user_id, "release", rest, job_id=job_id, model=model)
    assert released is not None
    cur = await conn.execute(
        """
        UPDATE credit_accounts SET reserved = reserved - %s, balance = balance + %s, updated_at = now()
        WHERE user_id = %s RETURNING balance
        """,
        (reserved, rest, user_id),
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.execute("UPDATE jobs SET charged_credits = %s WHERE id = %s", (charge, job_id))
    await _stamp(conn, [settled, released], row[0])
    return charge


async def release_all(conn: AsyncConnection[Any], user_id: UUID, job_id: UUID, reserved: int,
                      model: str | None) -> None:
    """Give a failed or cancelled job's whole reservation back; once per job."""
    await settle(conn, user_id, job_id, reserved, 0, model)


async def balance_of(conn: AsyncConnection[Any], user_id: UUID) -> int:
    """Available credits."""
    cur = await conn.execute("SELECT balance FROM credit_accounts WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0
