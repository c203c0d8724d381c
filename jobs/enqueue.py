"""Submitting jobs: commit the row, announce it, then send the message.

"Commit, then send": a 202 means the row is committed. If the send is lost
(Redis restart, a crash between commit and send), the maintenance loop finds
the job still `queued` and sends it again (`jobs.store.due_for_resend`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from uuid import UUID

import anyio.to_thread
import dramatiq
import msgspec
from loguru import logger

from jobs import credits, metrics, store
from jobs.broker import actor_name
from jobs.clients import Clients
from jobs.ids import uuid7
from jobs.kinds import Job
from jobs.states import EventType


def send_job(broker: dramatiq.Broker, job_id: UUID, queue: str) -> None:
    """Send the message that makes a worker run `job_id` (blocking)."""
    broker.enqueue(
        dramatiq.Message(
            queue_name=queue, actor_name=actor_name(queue), args=(str(job_id),), kwargs={}, options={}
        )
    )


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
    broker: dramatiq.Broker,
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
    kind, queue = job.__struct_config__.tag, str(job.queue)
    async with clients.pool.connection() as conn, conn.transaction():
        row, created = await store.insert_job(
            conn,
            job_id=job_id or uuid7(),
            owner_id=owner_id,
            kind=str(kind),
            queue=queue,
            input=msgspec.to_builtins(job.input),
            metadata=job.metadata,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            max_attempts=clients.settings.max_attempts,
            reserved_credits=reserve,
        )
        if created and reserve > 0:
            await credits.reserve(conn, owner_id, row.id, reserve, credits.ledger_model(row))
    if not created:
        return Submitted(row, created=False)
    metrics.JOBS_SUBMITTED.labels(kind=row.kind, queue=queue).inc()
    try:
        # `queued` is published before the send so it is always seq 1, ahead of `started`.
        await clients.events.publish(row.id, owner_id, EventType.QUEUED, {"queue": queue})
        await anyio.to_thread.run_sync(send_job, broker, row.id, queue)
    except Exception:
        # The row is committed: the reconciler will send it. The 202 stands.
        logger.opt(exception=True).bind(job_id=str(row.id)).warning("send failed; the reconciler will resend")
    return Submitted(row, created=True)
