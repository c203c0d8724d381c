"""How a job ends: every way to a terminal state, each in one place.

    succeed   running (claim N) → succeeded   result, attempts, the actual cost settled, the rest released
    fail      running (claim N) → failed      error, attempts, the whole reservation released
    cancel    queued | running  → cancelled   by request; a worker running it is told to stop
    expire    queued | running  → failed      `job_expired`: unfinished long after submission (maintenance)
    abandon   queued | running  → failed      `delivery_failed`: Dramatiq gave up on its message

Each is one transaction: the conditional UPDATE of the job (`jobs/store.py`;
`succeed`/`fail` are fenced by the claim number, so a worker that lost its
lease changes nothing), the attempt log, the credit settlement, and freeing
the caller's concurrency slot — before the commit makes the job visibly
finished, so a client that sees the result can submit its next job at once.
After the commit, `announce_end` counts the job and publishes its terminal
event. A job with a `callback_url` gets its `webhook.deliver` job inserted in
the same transaction (so the callback can never be lost) and sent after the
commit. Batch lines (`batch_id`) settle against their batch's reservation
(`credits.settle_batch_line`; nothing to release per line) and publish no
per-line events: their batch reports progress (`jobs/batches.py`). Whoever
loses a race (a cancel against a completion, two maintenance loops) finds its
UPDATE matching nothing and does nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from loguru import logger
from psycopg import AsyncConnection
from redis.exceptions import RedisError

from jobs import credits, knowledge, metrics, store
from jobs.broker import count_rate
from jobs.clients import Clients
from jobs.enqueue import insert_job_of, send_after_commit
from jobs.errors import DeliveryFailed, JobCancelled, JobExpired, JobFinished, NotFound, SwitchyardError, error_body
from jobs.events import CANCEL_CHANNEL
from jobs.ids import uuid7
from jobs.kinds import WebhookInput, WebhookJob
from jobs.knowledge import Effect
from jobs.states import EventType, Kind, Status

_END_EVENTS = {Status.SUCCEEDED: EventType.SUCCEEDED, Status.FAILED: EventType.FAILED,
               Status.CANCELLED: EventType.CANCELLED}


async def succeed(clients: Clients, job: store.JobRow, attempts: list[store.AttemptRow], result: dict[str, Any],
                  charge: int, effect: Effect | None = None) -> bool:
    """Record the result of claim `job.attempts` and charge `charge` (capped at the reservation).

    `effect` writes what the job produced (a file's chunks) in the same transaction, after the claim
    was verified: a job's effects are written once, by the claim that ends it, or not at all.
    Returns False when the job was no longer this claim's (cancelled, or reclaimed after a lost lease).
    """
    if not await _finish(clients, job, Status.SUCCEEDED, attempts, result=result, charge=charge, effect=effect):
        return False
    if usage := result.get("usage"):
        model = str(job.input.get("model", ""))
        metrics.TOKENS.labels(model=model, direction="input").inc(usage.get("prompt_tokens", 0))
        metrics.TOKENS.labels(model=model, direction="output").inc(usage.get("completion_tokens", 0))
    await announce_end(clients, job, Status.SUCCEEDED, {"result": result})
    return True


async def fail(clients: Clients, job: store.JobRow, attempts: list[store.AttemptRow],
               error: SwitchyardError) -> bool:
    """Record the failure of claim `job.attempts`, releasing its credits; False when it was not ours."""
    body = error_body(error)
    if not await _finish(clients, job, Status.FAILED, attempts, error=body, charge=0):
        return False
    await announce_end(clients, job, Status.FAILED, {"error": body})
    return True


async def cancel(clients: Clients, job_id: UUID, owner_id: UUID | None) -> store.JobRow:
    """Cancel a queued job (it never runs) or a running one (its worker stops it within a second).

    `owner_id` None cancels anyone's job (admins).

    Raises:
        NotFound: no such job for this owner.
        JobFinished: the job already reached a final state.
    """
    error = error_body(JobCancelled("cancelled by request"))
    row = await _end_unfinished(clients, lambda conn: store.cancel(conn, job_id, owner_id, error))
    if row is None:
        current = await store.get_job(clients.pool, job_id, owner_id)
        if current is None:
            raise NotFound(f"job {job_id} not found")
        raise JobFinished(f"job {job_id} already {current.status}", job_status=current.status)
    # Every worker process listens here and cancels the task running this job.
    await clients.redis.publish(CANCEL_CHANNEL, str(row.id))
    return row


async def expire(clients: Clients, job_id: UUID, expiry_seconds: int) -> store.JobRow | None:
    """Fail a job still unfinished `expiry_seconds` after submission; None if it finished or is busy meanwhile."""
    error = error_body(JobExpired(f"the job did not finish within {expiry_seconds} s of its submission; "
                                  "its reserved credits were released", expiry_seconds=expiry_seconds))
    row = await _end_unfinished(clients, lambda conn: store.fail_unfinished(conn, job_id, error, skip_locked=True))
    if row is not None:
        logger.bind(job_id=str(job_id)).warning("expired a job unfinished after {} s; released {} credits",
                                                expiry_seconds, row.reserved_credits)
    return row


async def abandon(clients: Clients, job_id: UUID, reason: str) -> store.JobRow | None:
    """Fail a job whose message Dramatiq gave up on (dead-lettered); None if it finished anyway."""
    error = error_body(DeliveryFailed(f"the job could not be run: {reason}"))
    row = await _end_unfinished(clients, lambda conn: store.fail_unfinished(conn, job_id, error))
    if row is not None:
        logger.bind(job_id=str(job_id)).error("job failed after its message was dead-lettered: {}", reason)
    return row


async def announce_end(clients: Clients, job: store.JobRow, status: Status, data: dict[str, Any]) -> None:
    """After the commit: count the finished job and publish its terminal event."""
    metrics.JOBS.labels(kind=job.kind, status=status).inc()
    if job.started_at is not None:
        metrics.JOB_DURATION.labels(kind=job.kind, status=status).observe(
            max(0.0, (datetime.now(UTC) - job.started_at).total_seconds()))
    if job.batch_id is not None:
        metrics.BATCH_LINES.labels(status=status).inc()
    try:
        async with clients.redis.pipeline(transaction=False) as pipe:
            count_rate(pipe, job.queue, "completed")
            await pipe.execute()
    except RedisError as exc:  # an operator's rate figure is not worth failing the ending for
        logger.warning("could not count the completion: {}", exc)
    if job.batch_id is None:
        await clients.events.publish(job.id, job.owner_id, _END_EVENTS[status], data)
    logger.bind(job_id=str(job.id)).info("job {}", status)


async def _into_outbox(clients: Clients, job_id: UUID) -> None:
    """Before the commit that ends a job: its terminal event is owed (see `EventLog.ending`)."""
    try:
        await clients.events.ending(job_id)
    except RedisError as exc:  # the ending itself must not wait for Redis; the event goes out if it can
        logger.bind(job_id=str(job_id)).warning("could not note the ending in the outbox: {}", exc)


async def announce_missed_ends(clients: Clients, grace_seconds: float) -> int:
    """Publish the terminal events of jobs that ended without one (their process died after the commit).

    A job still in the outbox after `grace_seconds` is looked up: finished → its
    terminal event is published (once: a late publisher's repeat is dropped);
    not finished (its process died before the commit; it will run again and
    end) → looked at again later; gone → forgotten. Returns how many were announced.
    """
    ids = await clients.events.unannounced(grace_seconds)
    if not ids:
        return 0
    rows = {str(row.id): row for row in await store.get_jobs(clients.pool, [UUID(i) for i in ids])}
    announced, later = 0, []
    for job_id in ids:
        row = rows.get(job_id)
        if row is None:
            continue
        status = Status(row.status)
        if status not in _END_EVENTS:
            later.append(job_id)
            continue
        data = {"result": row.result} if status is Status.SUCCEEDED else {"error": row.error}
        if await clients.events.publish(row.id, row.owner_id, _END_EVENTS[status], data):
            announced += 1
            logger.bind(job_id=job_id).warning("announced the end of a job whose process died after finishing it")
    await clients.events.check_later(later)
    await clients.events.forget([job_id for job_id in ids if job_id not in rows])
    return announced


async def _finish(clients: Clients, job: store.JobRow, status: Status, attempts: list[store.AttemptRow], *,
                  result: dict[str, Any] | None = None, error: dict[str, Any] | None = None, charge: int,
                  effect: Effect | None = None) -> bool:
    """The outcome, the attempt log and the credit settlement of one claim, in one transaction."""
    usage = result.get("usage") if result else None
    if job.batch_id is None:
        # Before the transaction, not inside it (no Redis round trip while the job's row is locked). If the
        # outcome is then discarded, the outbox sweep finds the job unfinished or announced, and moves on.
        await _into_outbox(clients, job.id)
    async with clients.pool.connection() as conn, conn.transaction():
        if not await store.finish(conn, job.id, job.attempts, status, result=result, error=error, usage=usage):
            logger.bind(job_id=str(job.id)).info("outcome discarded: the job is no longer ours")
            return False
        await store.record_attempts(conn, job.id, attempts)
        if effect is not None:
            await effect(conn)
        await _kind_ended(conn, job, status, error)
        callback = await _insert_callback(clients, conn, job, status, result=result, error=error)
        if job.batch_id is not None:
            # Lines never took a concurrency slot, and nothing else may hold the account's row lock longer.
            await credits.settle_batch_line(conn, job.owner_id, job.id, job.reserved_credits, charge,
                                            credits.ledger_model(job))
        else:
            await clients.inflight.done(job.owner_id, job.id)
            await credits.settle(conn, job.owner_id, job.id, job.reserved_credits, charge,
                                 credits.ledger_model(job))
    settled = min(charge, job.reserved_credits)
    metrics.CREDITS.labels(operation="settled").inc(settled)
    if job.batch_id is None:
        metrics.CREDITS.labels(operation="released").inc(job.reserved_credits - settled)
    await send_after_commit(clients, callback)
    return True


async def _end_unfinished(clients: Clients,
                          end: Callable[[AsyncConnection[Any]], Awaitable[store.JobRow | None]]) -> store.JobRow | None:
    """End a job that no claim fences (cancel, expiry, dead letter): release everything it holds."""
    async with clients.pool.connection() as conn, conn.transaction():
        row = await end(conn)
        if row is None:
            return None
        if row.batch_id is None:
            await _into_outbox(clients, row.id)
        # A batch line holds no reservation of its own (held = 0): its batch releases at the end.
        held = await credits.held(conn, row.id)
        await credits.release_all(conn, row.owner_id, row.id, held, credits.ledger_model(row))
        await _kind_ended(conn, row, Status(row.status), row.error)
        callback = await _insert_callback(clients, conn, row, Status(row.status), error=row.error)
        await clients.inflight.done(row.owner_id, row.id)
    metrics.CREDITS.labels(operation="released").inc(held)
    await send_after_commit(clients, callback)
    await announce_end(clients, row, Status(row.status), {"error": row.error})
    return row


async def _kind_ended(conn: AsyncConnection[Any], job: store.JobRow, status: Status,
                      error: dict[str, Any] | None) -> None:
    """What a kind's ending changes besides the job: a file whose processing failed shows it."""
    if job.kind == Kind.FILE_PROCESS and status != Status.SUCCEEDED:
        await knowledge.file_failed(conn, job, error)


def job_summary(job: store.JobRow, status: Status, *, result: dict[str, Any] | None = None,
                error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A finished job as its callback reports it (the fields of `GET /v1/jobs/{id}` that matter)."""
    return {
        "id": str(job.id), "object": "job", "kind": job.kind, "status": str(status), "queue": job.queue,
        "metadata": job.metadata, "result": result, "error": error,
        "usage": result.get("usage") if result else None,
        "created_at": job.created_at.isoformat(), "claims": job.attempts,
    }


async def _insert_callback(clients: Clients, conn: AsyncConnection[Any], job: store.JobRow, status: Status, *,
                           result: dict[str, Any] | None = None,
                           error: dict[str, Any] | None = None) -> store.JobRow | None:
    """The job's `webhook.deliver` job, inserted in the ending transaction; None without a `callback_url`."""
    if not job.callback_url:
        return None
    event = f"job.{status}"
    hook = WebhookJob(input=WebhookInput(
        url=job.callback_url, webhook_id=f"msg_{job.id.hex}", type=event, subject=str(job.id),
        data=job_summary(job, status, result=result, error=error)))
    # Keyed by the job: an ending that is retried inserts the callback once.
    return await insert_job_of(conn, hook, owner_id=job.owner_id, job_id=uuid7(),
                               idempotency_key=f"callback:{job.id}", max_attempts=clients.settings.max_attempts)
