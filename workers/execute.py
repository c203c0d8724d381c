"""Running one delivery of a job: claim, run its kind's handler, end it.

    claim (conditional UPDATE) ─► `started` ─► HANDLERS[kind] (provider calls,
    events) ─► lifecycle.succeed / lifecycle.fail (one transaction each)

A duplicate delivery claims nothing and returns. A job claimed more than
`max_attempts` times (it keeps killing its workers) is quarantined: failed
with `job_quarantined` instead of run again. A cancelled job's task is
cancelled by the cancel watcher; the API already ended and announced it.
Infrastructure failures (database or Redis down) give the job back to the
queue and re-raise, so Dramatiq retries the message with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime
from uuid import UUID

import msgspec
from loguru import logger

from jobs import lifecycle, metrics, store
from jobs.errors import InvalidRequest, Quarantined, SwitchyardError
from jobs.kinds import decode_job
from jobs.states import EventType
from workers.handlers import HANDLERS
from workers.runtime import Runtime


async def _keep_lease(rt: Runtime, job: store.JobRow) -> None:
    """Renew the lease while the job runs, so the reconciler never reclaims a live job."""
    interval = max(0.5, rt.settings.lease_seconds / 3)
    while True:
        await asyncio.sleep(interval)
        if not await store.renew_lease(rt.pool, job.id, job.attempts, rt.settings.lease_seconds):
            return


def _chaos(rt: Runtime, job: store.JobRow) -> None:
    """Chaos testing: die like an OOM-killed process, or fail like a bug, when the input says so."""
    crash, error = rt.settings.chaos_crash_marker, rt.settings.chaos_error_marker
    if not (crash or error):
        return
    text = msgspec.json.encode(job.input).decode()
    if crash and crash in text:
        logger.error("chaos marker found: exiting abruptly")
        os._exit(137)
    if error and error in text:
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
            await lifecycle.fail(rt, job, [], exc)
            return
        await _run_claimed(rt, job)


async def _run_claimed(rt: Runtime, job: store.JobRow) -> None:
    """Run a job this worker holds the claim of, and end it."""
    attempts: list[store.AttemptRow] = []
    lease = asyncio.create_task(_keep_lease(rt, job))
    try:
        await _announce_start(rt, job)
        try:
            typed = decode_job(job.kind, job.input)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"the job's input does not fit its kind: {exc}") from None
        work = asyncio.ensure_future(HANDLERS[job.kind](rt, job, typed.input, attempts))
        rt.cancels.register(job.id, work)
        outcome = await work
    except SwitchyardError as exc:
        # Provider failures, and requests that can no longer be served (e.g. the model was
        # removed from the catalogue while the job waited): final, not worth a retry.
        logger.warning("job failed: {}", exc.message)
        await lifecycle.fail(rt, job, attempts, exc)
        return
    except asyncio.CancelledError:
        if rt.cancels.was_cancelled(job.id):
            # The API ended and announced the job; only the calls it made are left to record.
            logger.info("job cancelled while running")
            async with rt.pool.connection() as conn:
                await store.record_attempts(conn, job.id, attempts)
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
    await lifecycle.succeed(rt, job, attempts, msgspec.to_builtins(outcome.result), outcome.charge,
                            effect=outcome.effect)


async def _announce_start(rt: Runtime, job: store.JobRow) -> None:
    """Publish `started` (and `reset` for a reclaimed stream), after the chaos hooks had their say."""
    _chaos(rt, job)
    if job.batch_id is not None:
        return  # batch lines publish no per-line events: their batch reports progress
    await rt.events.publish(job.id, job.owner_id, EventType.STARTED,
                            {"attempt": job.attempts, "worker": rt.worker_id})
    if job.attempts > 1 and job.input.get("stream"):
        # A previous claim may have streamed part of an answer before its worker died.
        await rt.events.publish(job.id, job.owner_id, EventType.RESET, {"reason": "reclaimed"})


async def _hand_back(rt: Runtime, job: store.JobRow) -> None:
    """Return a job this worker cannot finish to the queue (best effort: the lease expires anyway)."""
    with contextlib.suppress(Exception):
        await store.release(rt.pool, job.id, job.attempts)
