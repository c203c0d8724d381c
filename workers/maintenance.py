"""The maintenance loop: keeps every 202 a promise.

Each tick runs Dramatiq's broker maintenance on every queue (a killed worker's
unacked messages go back to their queue once its heartbeat is older than
`SWITCHYARD_HEARTBEAT_TIMEOUT_MS`), then re-sends jobs whose message may have
been lost (still `queued` long after their last send, or `running` under an
expired lease).
Duplicate messages are harmless: the claim makes the extra delivery a no-op.
Run one or more (`switchyard maintenance`); `FOR UPDATE SKIP LOCKED` lets
several loops share the work.
"""

from __future__ import annotations

import asyncio

import anyio.to_thread
import dramatiq
from loguru import logger
from psycopg_pool import AsyncConnectionPool

from jobs import metrics, store
from jobs.broker import WakeupRedisBroker
from jobs.db import open_pool
from jobs.enqueue import send_job
from jobs.settings import Settings
from jobs.states import Queue


async def resend_lost(pool: AsyncConnectionPool, broker: dramatiq.Broker, settings: Settings) -> int:
    """One reconciler pass; returns how many jobs were sent again."""
    due = await store.due_for_resend(pool, settings.reconcile_after_seconds)
    for job_id, queue in due:
        await anyio.to_thread.run_sync(send_job, broker, job_id, queue)
        logger.bind(job_id=str(job_id)).warning("re-sent a job whose message looked lost (queue {})", queue)
    return len(due)


def broker_upkeep(broker: WakeupRedisBroker) -> dict[str, int]:
    """Run Dramatiq's maintenance on every queue; returns each queue's depth.

    `broker` must be built with `maintenance=True`: then each command (here a
    cheap queue-size query) requeues the unacked messages of workers whose
    heartbeat is older than the heartbeat timeout.
    """
    depths = {}
    for queue in Queue:
        depths[str(queue)] = int(broker.do_qsize(str(queue)))
        metrics.QUEUE_DEPTH.labels(queue=str(queue)).set(depths[str(queue)])
    return depths


async def run_forever(settings: Settings, broker: WakeupRedisBroker) -> None:
    """Tick until cancelled; a failing tick is logged and retried next tick."""
    pool = await open_pool(settings.database_url, min_size=1, max_size=2)
    logger.info("maintenance loop running every {}s", settings.maintenance_interval_seconds)
    try:
        while True:
            try:
                await anyio.to_thread.run_sync(broker_upkeep, broker)
                await resend_lost(pool, broker, settings)
            except Exception:
                logger.opt(exception=True).error("maintenance tick failed")
            await asyncio.sleep(settings.maintenance_interval_seconds)
    finally:
        await pool.close()
