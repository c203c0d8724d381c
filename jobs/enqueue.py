"""Submitting jobs: commit the row, announce it, then send the message.

"Commit, then send": a 202 means the row is committed. If the send is lost
(Redis restart, a crash between commit and send), the maintenance loop finds
the job still `queued` and sends it again (`jobs.store.due_for_resend`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from loguru import logger
from psycopg import AsyncConnection

from jobs import credits, metrics, store
from jobs.broker import WakeupRedisBroker, send_jobs
from jobs.clients import Clients
from jobs.ids import uuid7
from jobs.kinds import Job
from jobs.states import EventType


def send_job(broker: WakeupRedisBroker, job_id: UUID, queue: str) -> None:
    """Send the message that makes a worker run `job_id` (blocking; one round trip)."""
    broker.send_jobs([(str(job_id), queue)])


def new_job(job: Job, *, owner_id: UUID, job_id: UUID, max_attempts: int, reserve: int = 0) -> store.NewJob:
    """The row a job becomes: its kind, lane, input as stored, and what it holds."""
    return store.NewJob(
        id=job_id, owner_id=owner_id, kind=str(job.__struct_config__.tag), queue=str(job.queue),
        input=msgspec.to_builtins(job.input), metadata=job.metadata, max_attempts=max_attempts,
        reserved_credits=reserve, callback_url=getattr(job, "callback_url", None),
    )


def count_submitted(rows: list[store.JobRow]) -> None:
    """Metrics of newly committed jobs: submitted, and the credits they reserved."""
    for row in rows:
        metrics.JOBS_SUBMITTED.labels(kind=row.kind, queue=row.queue).inc()
        metrics.CREDITS.labels(operation="reserved").inc(row.reserved_credits)


async def _insert(conn: AsyncConnection[Any], job: Job, *, owner_id: UUID, job_id: UUID,
                  idempotency_key: str | None, fingerprint: bytes | None, max_attempts: int,
                  reserve: int = 0) -> tuple[store.JobRow, bool]:
    new = new_job(job, owner_id=owner_id, job_id=job_id, max_attempts=max_attempts, reserve=reserve)
    return await store.insert_job(
        conn, job_id=new.id, owner_id=new.owner_id, kind=new.kind, queue=new.queue, input=new.input,
        metadata=new.metadata, idempotency_key=idempotency_key, request_hash=fingerprint,
        max_attempts=new.max_attempts, reserved_credits=new.reserved_credits, callback_url=new.callback_url,
    )


async def insert_reserved(conn: AsyncConnection[Any], job: Job, *, owner_id: UUID, job_id: UUID,
                          max_attempts: int, reserve: int, idempotency_key: str | None = None,
                          fingerprint: bytes | None = None) -> tuple[store.JobRow, bool]:
    """Insert a job and reserve its credits, in the caller's transaction; (the row, whether it is new).

    Send it with `send_after_commit` once the transaction committed.

    Raises:
        InsufficientCredits: the balance cannot cover `reserve` (roll the transaction back).
    """
    row, created = await _insert(conn, job, owner_id=owner_id, job_id=job_id, idempotency_key=idempotency_key,
                                 fingerprint=fingerprint, max_attempts=max_attempts, reserve=reserve)
    if created and reserve > 0:
        await credits.reserve(conn, owner_id, row.id, reserve, credits.ledger_model(row))
    return row, created


async def insert_job_of(conn: AsyncConnection[Any], job: Job, *, owner_id: UUID, job_id: UUID,
                        idempotency_key: str, max_attempts: int) -> store.JobRow | None:
    """Insert a platform job (a callback, a batch's webhook) in the caller's transaction; None if it exists.

    Send it with `send_after_commit` once the transaction committed.
    """
    row, created = await _insert(conn, job, owner_id=owner_id, job_id=job_id, idempotency_key=idempotency_key,
                                 fingerprint=None, max_attempts=max_attempts)
    return row if created else None


async def send_after_commit(clients: Clients, *rows: store.JobRow | None) -> None:
    """Publish committed jobs' `queued` events (always seq 1), then send them, one pipeline each;
    a failure is the reconciler's to repair. `None`s are skipped."""
    sent = [row for row in rows if row is not None]
    if not sent:
        return
    try:
        await clients.events.publish_many([(row.id, row.owner_id, EventType.QUEUED, {"queue": row.queue})
                                           for row in sent])
        await send_jobs(clients.redis, [(str(row.id), row.queue) for row in sent],
                        wakeup=clients.settings.dispatch_wakeup)
    except Exception:
        # The rows are committed: the reconciler will send them. The 202s stand.
        logger.opt(exception=True).bind(job_id=str(sent[0].id), jobs=len(sent)).warning(
            "send failed; the reconciler will resend")


def request_fingerprint(body: bytes) -> bytes:
    """What an idempotency key is bound to: a hash of the request body."""
    return hashlib.sha256(body).digest()


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submission."""

    job: store.JobRow
    created: bool


async def submit(
    clients: Clients,
    job: Job,
    *,
    owner_id: UUID,
    idempotency_key: str | None = None,
    fingerprint: bytes | None = None,
    reserve: int = 0,
    job_id: UUID | None = None,
) -> Submitted:
    """Create a job (reserving `reserve` credits in the same transaction) and enqueue it.

    With a known idempotency key, returns the original job and reserves nothing.

    Raises:
        InsufficientCredits: the balance cannot cover `reserve`; nothing was written.
    """
    async with clients.pool.connection() as conn, conn.transaction():
        row, created = await insert_reserved(conn, job, owner_id=owner_id, job_id=job_id or uuid7(),
                                             idempotency_key=idempotency_key, fingerprint=fingerprint,
                                             max_attempts=clients.settings.max_attempts, reserve=reserve)
    if not created:
        return Submitted(row, created=False)
    count_submitted([row])
    # `queued` is published before the send so it is always seq 1, ahead of `started`.
    await send_after_commit(clients, row)
    return Submitted(row, created=True)
