"""Running one job: claim, execute, record, announce.

    claim (conditional UPDATE) ─► `started` ─► kind handler (provider calls,
    `delta` events) ─► result + attempts in ONE transaction ─► terminal event

A duplicate delivery claims nothing and returns. Infrastructure failures
(database or Redis down) give the job back to the queue and re-raise so
Dramatiq retries the message with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import msgspec
from loguru import logger

from jobs import store
from jobs.errors import ProviderError, SwitchyardError
from jobs.states import EventType, Kind, Status
from workers.chat import run_chat_completion
from workers.runtime import Runtime

Handler = Callable[[Runtime, store.JobRow, list[store.AttemptRow]], Awaitable[msgspec.Struct]]

#: The handler of each job kind.
HANDLERS: dict[str, Handler] = {Kind.CHAT_COMPLETION: run_chat_completion}


def error_body(exc: SwitchyardError) -> dict[str, Any]:
    """How a job's failure is stored and shown: a stable code and a message."""
    return {"code": exc.code, "message": exc.message}


async def _keep_lease(rt: Runtime, job: store.JobRow) -> None:
    """Renew the lease while the job runs, so the reconciler never reclaims a live job."""
    interval = max(1.0, rt.settings.lease_seconds / 3)
    while True:
        await asyncio.sleep(interval)
        if not await store.renew_lease(rt.pool, job.id, job.attempts, rt.settings.lease_seconds):
            return


async def run_job(rt: Runtime, job_id: UUID) -> None:
    """Execute one delivery of `job_id`; a no-op unless this delivery wins the claim."""
    job = await store.claim(rt.pool, job_id, rt.worker_id, rt.settings.lease_seconds)
    if job is None:
        logger.bind(job_id=str(job_id)).debug("not claimable: duplicate delivery or already finished")
        return
    with logger.contextualize(job_id=str(job_id)):
        await rt.events.publish(job.id, job.owner_id, EventType.STARTED,
                                {"attempt": job.attempts, "worker": rt.worker_id})
        attempts: list[store.AttemptRow] = []
        lease = asyncio.create_task(_keep_lease(rt, job))
        try:
            result = await HANDLERS[job.kind](rt, job, attempts)
        except ProviderError as exc:
            logger.warning("job failed: {}", exc.message)
            await _settle(rt, job, Status.FAILED, attempts, error=error_body(exc))
            return
        except BaseException:
            # Infrastructure trouble or shutdown: hand the job back and let Dramatiq retry.
            with contextlib.suppress(Exception):
                await store.release(rt.pool, job.id, job.attempts)
            raise
        finally:
            lease.cancel()
        await _settle(rt, job, Status.SUCCEEDED, attempts, result=msgspec.to_builtins(result))


async def _settle(
    rt: Runtime,
    job: store.JobRow,
    status: Status,
    attempts: list[store.AttemptRow],
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Store the outcome and the attempt log in one transaction, then announce it."""
    usage = result.get("usage") if result else None
    async with rt.pool.connection() as conn, conn.transaction():
        finished = await store.finish(conn, job.id, job.attempts, status, result=result, error=error, usage=usage)
        if not finished:
            # Cancelled meanwhile, or our lease expired and another worker took over.
            logger.info("outcome discarded: the job is no longer ours")
            return
        for attempt in attempts:
            await store.record_attempt(conn, job.id, attempt)
    event = EventType.SUCCEEDED if status is Status.SUCCEEDED else EventType.FAILED
    await rt.events.publish(job.id, job.owner_id, event, {"result": result} if result else {"error": error})
    logger.info("job {}", status)
