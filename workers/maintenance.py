"""The maintenance loop: keeps every 202 a promise.

Each tick runs Dramatiq's broker maintenance on every queue (a killed worker's
unacked messages go back to their queue once its heartbeat is older than
`SWITCHYARD_HEARTBEAT_TIMEOUT_MS`), then re-sends jobs whose message may have
been lost (still `queued` long after their last send, or `running` under an
expired lease). The reservation sweep runs first, so an expired job is failed
and its credits released rather than sent again. Last, every live batch is
looked at (`jobs.batches.Tracker`): progress events, expiry, cancellation,
resuming a stopped fan-out, and finalizing a batch whose lines all ended.
Jobs whose process died between ending them and announcing it get their
terminal event (`jobs.lifecycle.announce_missed_ends`, the events' outbox).
Duplicate messages are harmless: the claim makes the extra delivery a no-op.
Run one or more (`switchyard maintenance` = `python -m workers.maintenance`);
`FOR UPDATE SKIP LOCKED` lets several loops share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from uuid import UUID

import anyio.to_thread
from loguru import logger

from jobs import batches, lifecycle, metrics, queues, store, sweeps
from jobs.broker import NAMESPACE, WakeupRedisBroker, make_broker, send_jobs, unsent
from jobs.catalog import load_catalog
from jobs.clients import Clients
from jobs.logging import setup_logging
from jobs.settings import Settings, get_settings
from jobs.states import Queue

#: How often finished-but-unsettled reservations are looked for (a repair for old code paths, not a hot path).
ORPHAN_SWEEP_SECONDS = 60.0
#: A job whose ending began this long ago and still has no terminal event lost its publisher (a process
#: killed between the commit and the publish): the loop announces it. Far above a commit's duration.
ENDING_GRACE_SECONDS = 5.0


async def resend_lost(clients: Clients) -> int:
    """One reconciler pass; returns how many jobs were sent again.

    A job queued for long is usually just waiting its turn (a batch draining on
    the bulk lane): its message, stored under the job's id, is still in Redis,
    and only queued jobs whose message is gone are sent again. A running job
    whose lease expired is sent again in any case (its worker hung or died).
    """
    due = await store.due_for_resend(clients.pool, clients.settings.reconcile_after_seconds)
    queued = [(str(job_id), queue) for job_id, queue, status in due if status == "queued"]
    lost = [(str(job_id), queue) for job_id, queue, status in due if status != "queued"]
    # A queue with nothing waiting cannot hold a message that is merely waiting its turn: its queued
    # jobs' messages are lost, or stranded in a consumer that dropped its prefetch (a Redis blip).
    empty = {queue for queue in {q for _, q in queued} if not await clients.redis.llen(f"{NAMESPACE}:{queue}")}
    # A dead letter's job waits for an operator's requeue (or its hold to run out): not lost, even
    # when its lease lapsed because the worker could not hand it back (the database was down).
    held = await queues.held_dead(clients.redis, queued + lost, namespace=NAMESPACE)
    queued = [job for job in queued if job[0] not in held]
    lost = [job for job in lost if job[0] not in held]
    lost += [job for job in queued if job[1] in empty]
    lost += await unsent(clients.redis, [job for job in queued if job[1] not in empty])
    # Ahead of the queue: these jobs were accepted long ago (a backlog must not delay them again).
    await send_jobs(clients.redis, lost, wakeup=clients.settings.dispatch_wakeup, front=True)
    for job_id, queue in lost:
        logger.bind(job_id=job_id).warning("re-sent a job whose message was lost (queue {})", queue)
    return len(lost)


async def fail_held_dead_letters(clients: Clients) -> int:
    """Fail the jobs of dead letters nobody requeued within `SWITCHYARD_DEAD_LETTER_HOLD_SECONDS`.

    A job whose failing raises (the database is what broke, often) is held again and retried next tick.
    """
    hold = clients.settings.dead_letter_hold_seconds
    failed = 0
    for queue, job_id, message_id in await queues.take_expired_holds(clients.redis, NAMESPACE, hold):
        reason = f"dead-lettered on {queue} and not requeued within {hold:g} s"
        try:
            failed += await lifecycle.abandon(clients, UUID(job_id), reason) is not None
        except Exception:
            await queues.hold_again(clients.redis, queue, job_id, message_id)
            raise
    return failed


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


class ReservationSweep:
    """Expires stale jobs every tick and releases orphaned reservations now and then.

    Expiry reads only live jobs (a partial index). The orphan search reads
    every job once at start-up, then only jobs created within the expiry
    window (plus an hour) by primary-key range: an older job is finished by
    the expiry sweep itself, which releases its credits.
    """

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.next_orphan_sweep = 0.0
        self.orphans_since: UUID | None = None  # None: the first pass searches everything

    async def sweep(self) -> int:
        """One pass; returns how many jobs had credits released."""
        expiry = self.clients.settings.job_expiry_seconds
        expired = 0
        for job_id in await store.stale_jobs(self.clients.pool, expiry):
            expired += await lifecycle.expire(self.clients, job_id, expiry) is not None
        released = 0
        if time.monotonic() >= self.next_orphan_sweep:
            orphans = await sweeps.release_orphaned(self.clients.pool, since=self.orphans_since)
            for job_id, _owner, amount in orphans:
                logger.bind(job_id=str(job_id)).warning("released {} credits of a finished, unsettled job", amount)
            released = len(orphans)
            if len(orphans) < 100:  # caught up: next time, only recent jobs, and not before the interval
                self.orphans_since = sweeps.id_floor(time.time() - expiry - 3600)
                self.next_orphan_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
        return expired + released


async def run_forever(settings: Settings, broker: WakeupRedisBroker) -> None:
    """Tick until cancelled; a failing tick is logged and retried next tick."""
    clients = await Clients.connect(settings, pool_size=(1, 2))
    reservations = ReservationSweep(clients)
    tracker = batches.Tracker(clients, load_catalog(settings))
    logger.info("maintenance loop running every {}s", settings.maintenance_interval_seconds)
    try:
        while True:
            # Each step is isolated: one failing (say, Redis down) must not stop the others.
            for name, step in (("broker upkeep", lambda: anyio.to_thread.run_sync(broker_upkeep, broker)),
                               ("reservation sweep", reservations.sweep),
                               ("reconciler", lambda: resend_lost(clients)),
                               ("dead letters", lambda: fail_held_dead_letters(clients)),
                               ("missed ends", lambda: lifecycle.announce_missed_ends(clients, ENDING_GRACE_SECONDS)),
                               ("batches", tracker.tick)):
                try:
                    await step()
                except Exception:
                    logger.opt(exception=True).error("maintenance step failed: {}", name)
            await asyncio.sleep(settings.maintenance_interval_seconds)
    finally:
        await clients.close()


def main() -> None:
    """Run the loop with a maintenance broker (each command also requeues dead workers' messages)."""
    settings = get_settings()
    setup_logging(settings, "maintenance")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_forever(settings, make_broker(settings, middleware=[], maintenance=True)))


if __name__ == "__main__":
    main()
