"""Billing jobs: top-ups from payment webhooks and admin grants.

Each run credits the ledger and writes its audit row in one transaction. The
ledger reference (`stripe:pi_…`, `razorpay:pay_…`, `grant:<uuid>`) is unique
per kind, so a redelivered message, a reclaimed job or a second job for the
same payment credits nothing more: it succeeds with `duplicate: true`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from loguru import logger

from jobs import store
from jobs.audit import audit
from jobs.credits import credit
from jobs.payments import BillingResult, GrantInput, TopUpInput
from jobs.states import Kind
from workers.runtime import Runtime


async def run_topup(rt: Runtime, job: store.JobRow, attempts: list[store.AttemptRow]) -> BillingResult:
    """Credit a verified payment to its user, once per payment id."""
    spec = msgspec.convert(job.payload, TopUpInput)
    note = f"{spec.provider} payment of {spec.amount} {spec.currency}".strip()
    async with rt.pool.connection() as conn, conn.transaction():
        balance = await credit(conn, spec.user_id, "topup", spec.credits, reference=spec.payment_id, note=note)
        if balance is not None:
            await audit(conn, "billing.topup", target=str(spec.user_id), job_id=str(job.id),
                        payment_id=spec.payment_id, credits=spec.credits, amount=spec.amount,
                        currency=spec.currency)
    return _result(spec.credits, balance, spec.payment_id)


async def run_grant(rt: Runtime, job: store.JobRow, attempts: list[store.AttemptRow]) -> BillingResult:
    """Credit an admin's grant to its user, once per grant."""
    spec = msgspec.convert(job.payload, GrantInput)
    async with rt.pool.connection() as conn, conn.transaction():
        balance = await credit(conn, spec.user_id, "grant", spec.credits, reference=spec.reference,
                               note=spec.reason)
        if balance is not None:
            await audit(conn, "billing.grant", actor_id=spec.granted_by, target=str(spec.user_id),
                        job_id=str(job.id), reference=spec.reference, credits=spec.credits, reason=spec.reason)
    return _result(spec.credits, balance, spec.reference)


def _result(credits: int, balance: int | None, reference: str) -> BillingResult:
    if balance is None:
        logger.info("{} was credited before: nothing to do", reference)
        return BillingResult(credited=0, balance=None, duplicate=True)
    logger.info("credited {} credits for {}", credits, reference)
    return BillingResult(credited=credits, balance=balance, duplicate=False)


BillingHandler = Callable[[Runtime, store.JobRow, list[store.AttemptRow]], Awaitable[msgspec.Struct]]

#: Handlers of billing job kinds, by kind (merged into workers/execute.HANDLERS).
BILLING_HANDLERS: dict[str, BillingHandler] = {Kind.BILLING_TOPUP: run_topup, Kind.BILLING_GRANT: run_grant}
