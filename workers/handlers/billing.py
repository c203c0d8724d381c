"""Billing jobs: top-ups from payment webhooks and admin grants.

Each run credits the ledger and writes its audit row in one transaction. The
ledger reference (`stripe:pi_…`, `razorpay:pay_…`, `grant:<uuid>`) is unique
per kind, so a redelivered message, a reclaimed job or a second job for the
same payment credits nothing more: it succeeds with `duplicate: true`.
"""

from __future__ import annotations

from loguru import logger

from jobs import store
from jobs.audit import audit
from jobs.credits import credit
from jobs.kinds import BillingResult, GrantInput, TopUpInput
from workers.handlers.base import Outcome
from workers.runtime import Runtime


async def run_topup(rt: Runtime, job: store.JobRow, input: TopUpInput, attempts: list[store.AttemptRow]) -> Outcome:
    """Credit a verified payment to its user, once per payment id."""
    note = f"{input.provider} payment of {input.amount} {input.currency}".strip()
    async with rt.pool.connection() as conn, conn.transaction():
        balance = await credit(conn, input.user_id, "topup", input.credits, reference=input.payment_id, note=note)
        if balance is not None:
            await audit(conn, "billing.topup", target=str(input.user_id), job_id=str(job.id),
                        payment_id=input.payment_id, credits=input.credits, amount=input.amount,
                        currency=input.currency)
    return _result(input.credits, balance, input.payment_id)


async def run_grant(rt: Runtime, job: store.JobRow, input: GrantInput, attempts: list[store.AttemptRow]) -> Outcome:
    """Credit an admin's grant to its user, once per grant."""
    async with rt.pool.connection() as conn, conn.transaction():
        balance = await credit(conn, input.user_id, "grant", input.credits, reference=input.reference,
                               note=input.reason)
        if balance is not None:
            await audit(conn, "billing.grant", actor_id=input.granted_by, target=str(input.user_id),
                        job_id=str(job.id), reference=input.reference, credits=input.credits, reason=input.reason)
    return _result(input.credits, balance, input.reference)


def _result(credits: int, balance: int | None, reference: str) -> Outcome:
    if balance is None:
        logger.info("{} was credited before: nothing to do", reference)
        return Outcome(BillingResult(credited=0, balance=None, duplicate=True))
    logger.info("credited {} credits for {}", credits, reference)
    return Outcome(BillingResult(credited=credits, balance=balance, duplicate=False))
