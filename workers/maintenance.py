"""The maintenance loop: keeps every 202 a promise.

Each tick re-sends jobs whose message may have been lost (still `queued` long
after their last send, or `running` under an expired lease — a dead worker).
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

from jobs import store
from jobs.db import open_pool
from jobs.enqueue import send_job
from jobs.settings import Settings


async def resend_lost(pool: AsyncConnectionPool, broker: dramatiq.Broker, settings: Settings) -> int:
    """One reconciler pass; returns how many jobs were sent again."""
    due = await store.due_for_resend(pool, settings.reconcile_after_seconds)
    for job_id, queue in due:
        await anyio.to_thread.run_sync(send_job, broker, job_id, queue)
        logger.bind(job_id=str(job_id)).warning("re-sent a job whose message looked lost (queue {})", queue)
    return len(due)


async def run_forever(settings: Settings, broker: dramatiq.Broker) -> None:
    """Tick until cancelled; a failing tick is logged and retried next tick."""
    pool = await open_pool(settings.database_url, min_size=1, max_size=2)
    logger.info("maintenance loop running every {}s", settings.maintenance_interval_seconds)
    try:
        while True:
            try:
                await resend_lost(pool, broker, settings)
            except Exception:
                logger.opt(exception=True).error("maintenance tick failed")
            await asyncio.sleep(settings.maintenance_interval_seconds)
    finally:
        await pool.close()
