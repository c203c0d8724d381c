"""Running one job: claim, execute, record, announce.

    claim (conditional UPDATE) ─► `started` ─► kind handler (provider calls,
    events) ─► result + attempts in ONE transaction ─► terminal event

A duplicate delivery claims nothing and returns. A job claimed more than
`max_attempts` times (it keeps killing its workers) is quarantined: failed
with `job_quarantined` instead of run again. A cancelled job's task is
cancelled (workers/cancel.py); the API already recorded and announced it.
Infrastructure failures (database or Redis down) give the job back to the
queue and re-raise, so Dramatiq retries the message with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from loguru import logger

from jobs import credits, metrics, store
from jobs.errors import Quarantined, SwitchyardError
from jobs.states import EventType, Kind, Status
from workers.billing import BILLING_HANDLERS
from workers.chat import run_chat_completion
from workers.runtime import Runtime

Handler = Callable[[Runtime, store.JobRow, list[store.AttemptRow]], Awaitable[msgspec.Struct]]

#: The handler of each job kind.
HANDLERS: dict[str, Handler] = {Kind.CHAT_COMPLETION: run_chat_completion, **BILLING_HANDLERS}


def error_body(exc: SwitchyardError) -> dict[str, Any]:
    """How a job's failure is stored and shown: a stable code, a message, and details."""
    return {"code": exc.code, "message": exc.message, **{k: v for k, v in exc.extra.items() if v is not None}}


async def _keep_lease(rt: Runtime, job: store.JobRow) -> None:
    """Renew the lease while the job runs, so the reconciler never reclaims a live job."""
    interval = max(0.5, rt.settings.lease_seconds / 3)
    while True:
        await asyncio.sleep(interval)
        if not await store.renew_lease(rt.pool, job.id, job.attempts, rt.settings.lease_seconds):
            return


def _chaos(rt: Runtime, job: store.JobRow) -> None:
    """Chaos testing: die like an OOM-killed process, or fail like a bug, when the payload says so."""
    crash, error = rt.settings.chaos_crash_marker, rt.settings.chaos_error_marker
    if not (crash or error):
        return
    payload = msgspec.json.encode(job.payload).decode()
    if crash and crash in payload:
        logger.error("chaos marker found: exiting abruptly")
        os._exit(137)
    if error and error in payload:
        raise RuntimeError("chaos marker found: failing like an infrastructure error")


async def run_job(rt: Runtime, job_id: UUID) -> None:
    """Execute one delivery of `job_id`; a no-op unless this delivery wins the claim."""
    job = await store.claim(rt.pool, job_id, rt.worker_id, rt.settings.lease_seconds)
    if job is None:
        logger.bind(job_id=str(job_id)).debug("not claimable: duplicate delivery, cancelled or finished")
        return
    with logger.contextualize(job_id=str(job_id)):
        if job.attempts == 1:
            metrics.QUEUE_WAIT.labels(queue=job.queue).observe(
                (datetime.now(UTC) - job.created_at).total_seconds())
        if job.attempts > job.max_attempts:
            exc = Quarantined(f"claimed {job.attempts - 1} times without finishing; it keeps crashing workers",
                              claims=job.attempts - 1)
            logger.error("quarantined: {}", exc.message)
            await _settle(rt, job, Status.FAILED, [], error=error_body(exc))
            return
        attempts: list[store.AttemptRow] = []
        lease = asyncio.create_task(_keep_lease(rt, job))
        try:
            await _announce_start(rt, job)
            work = asyncio.ensure_future(HANDLERS[job.kind](rt, job, attempts))
            rt.cancels.register(job.id, work)
            result = await work
        except SwitchyardError as exc:
            # Provider failures, and requests that can no longer be served (e.g. the model was
            # removed from the routes while the job waited): final, not worth a retry.
            logger.warning("job failed: {}", exc.message)
            await _settle(rt, job, Status.FAILED, attempts, error=error_body(exc))
            return
        except asyncio.CancelledError:
            if rt.cancels.was_cancelled(job.id):
                logger.info("job cancelled while running")
                async with rt.pool.connection() as conn:
                    await store.record_attempts(conn, job.id, attempts)
                metrics.JOBS.labels(kind=job.kind, status="cancelled").inc()
                return
            await _hand_back(rt, job)  # shutdown, not a cancel request
            raise
        except BaseException:
            # Infrastructure trouble: hand the job back and let Dramatiq retry the message.
            await _hand_back(rt, job)
            raise
        finally:
            rt.cancels.unregister(job.id)
            lease.cancel()
        await _settle(rt, job, Status.SUCCEEDED, attempts, result=msgspec.to_builtins(result))


async def _announce_start(rt: Runtime, job: store.JobRow) -> None:
    """Publish `started` (and `reset` for a reclaimed stream), after the chaos hooks had their say."""
    _chaos(rt, job)
    await rt.events.publish(job.id, job.owner_id, EventType.STARTED,
                            {"attempt": job.attempts, "worker": rt.worker_id})
    if job.attempts > 1 and job.payload.get("stream"):
        # A previous claim may have streamed part of an answer before its worker died.
        await rt.events.publish(job.id, job.owner_id, EventType.RESET, {"reason": "reclaimed"})


async def _hand_back(rt: Runtime, job: store.JobRow) -> None:
    """Return a job this worker cannot finish to the queue (best effort: the lease expires anyway)."""
    with contextlib.suppress(Exception):
        await store.release(rt.pool, job.id, job.attempts)


async def _settle(
    rt: Runtime,
    job: store.JobRow,
    status: Status,
    attempts: list[store.AttemptRow],
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Store the outcome, the attempt log and the credit settlement in one transaction, then announce it."""
    usage = result.get("usage") if result else None
    async with rt.pool.connection() as conn, conn.transaction():
        finished = await store.finish(conn, job.id, job.attempts, status, result=result, error=error, usage=usage)
        if not finished:
            # Cancelled meanwhile, or our lease expired and another worker took over.
            logger.info("outcome discarded: the job is no longer ours")
            return
        await store.record_attempts(conn, job.id, attempts)
        charge = _charge(rt, job, result) if status is Status.SUCCEEDED else 0
        await credits.settle(conn, job.owner_id, job.id, job.reserved_credits, charge,
                             str(job.payload.get("model") or job.kind))
        # Free the concurrency slot before the commit makes the job visibly finished, so a
        # client that sees the result can submit the next job at once.
        await rt.inflight.done(job.owner_id, job.id)
    metrics.JOBS.labels(kind=job.kind, status=status).inc()
    if usage:
        model = str(job.payload.get("model", ""))
        metrics.TOKENS.labels(model=model, direction="input").inc(usage.get("prompt_tokens", 0))
        metrics.TOKENS.labels(model=model, direction="output").inc(usage.get("completion_tokens", 0))
    event = EventType.SUCCEEDED if status is Status.SUCCEEDED else EventType.FAILED
    await rt.events.publish(job.id, job.owner_id, event, {"result": result} if result else {"error": error})
    logger.info("job {}", status)


def _charge(rt: Runtime, job: store.JobRow, result: dict[str, Any] | None) -> int:
    """What a succeeded job costs: its usage at the prices of the target that served it."""
    if not result or "usage" not in result or job.reserved_credits == 0:
        return 0
    route = rt.routes.models.get(str(result.get("model")))
    target = next((t for t in route.targets if t.provider == result.get("provider")
                   and t.model == result.get("provider_model")), None) if route else None
    if target is None:
        # The route changed under a running job: charge the whole reservation, the agreed ceiling.
        return job.reserved_credits
    return credits.actual(result["usage"], target)


async def fail_exhausted(rt: Runtime, job_id: UUID, reason: str) -> None:
    """Dramatiq gave up on the message (retries exhausted, dead-lettered): fail the job if unfinished."""
    error = {"code": "delivery_failed", "message": f"the job could not be run: {reason}"}
    async with rt.pool.connection() as conn, conn.transaction():
        row = await store.fail_unfinished(conn, job_id, error)
        if row is not None:
            await credits.release_all(conn, row.owner_id, row.id, row.reserved_credits,
                                      str(row.payload.get("model") or row.kind))
    if row is not None:
        logger.bind(job_id=str(job_id)).error("job failed after its message was dead-lettered: {}", reason)
        await rt.inflight.done(row.owner_id, row.id)
        metrics.JOBS.labels(kind=row.kind, status="failed").inc()
        await rt.events.publish(row.id, row.owner_id, EventType.FAILED, {"error": error})
