"""Group commit: the submissions that arrive together on one process share one transaction.

Under load a submission's INSERT and reservation cost little next to its
COMMIT and its round trips — and every job of one user used to wait its turn
for that user's account row, held from the reservation to the commit, so one
busy user was limited to one job per commit. The submitter writes the jobs
that are waiting when a transaction ends in the next one:

    INSERT all ─► lock their users' accounts (in user order) ─► one UPDATE + one ledger INSERT ─► COMMIT
    ─► `queued` events and messages for all, in one Redis pipeline each

A lone request is written at once (no timer: latency at low load is that of
`jobs.enqueue.submit`); at most `parallel` transactions are open at a time, so
under load batches grow instead of the queue of waiting requests. A user whose
balance cannot cover their jobs of a batch has each of those jobs submitted
alone (`jobs.enqueue.submit`), which refuses exactly the ones it must; a job
with an idempotency key always takes that path (a known key returns the
original job). Either way a 202 still means the row is committed with its
reservation, and the balance can never go below zero (the check runs under
the account's lock).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from uuid import UUID

import psycopg

from jobs import credits, store
from jobs.clients import Clients
from jobs.enqueue import Submitted, count_submitted, new_job, send_after_commit, submit
from jobs.ids import uuid7
from jobs.kinds import Job


@dataclass
class _Waiting:
    job: Job
    new: store.NewJob
    done: asyncio.Future[Submitted]


class Submitter:
    """One per process: `submit` as `jobs.enqueue.submit` does, written in groups."""

    def __init__(self, clients: Clients, *, max_batch: int = 200, parallel: int = 2) -> None:
        self.clients = clients
        self.max_batch = max_batch
        self.parallel = parallel
        self._waiting: list[_Waiting] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def submit(self, job: Job, *, owner_id: UUID, reserve: int = 0, job_id: UUID | None = None,
                     idempotency_key: str | None = None, fingerprint: bytes | None = None) -> Submitted:
        """Create a job (reserving `reserve` credits) and enqueue it; see `jobs.enqueue.submit`.

        Raises:
            InsufficientCredits: the balance cannot cover `reserve`; nothing was written.
        """
        if idempotency_key is not None:
            return await submit(self.clients, job, owner_id=owner_id, idempotency_key=idempotency_key,
                                fingerprint=fingerprint, reserve=reserve, job_id=job_id)
        new = new_job(job, owner_id=owner_id, job_id=job_id or uuid7(),
                      max_attempts=self.clients.settings.max_attempts, reserve=reserve)
        waiting = _Waiting(job, new, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        # A finished writer leaves the set by a callback run later: count only the ones still running.
        if sum(not writer.done() for writer in self._writers) < self.parallel:
            writer = asyncio.create_task(self._write_while_waiting())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await waiting.done

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            # A request cancelled while it waited (its client left, a shutdown) gets no job.
            group = [waiting for waiting in group if not waiting.done.done()]
            if not group:
                continue
            try:
                await self._write(group)
            except Exception as exc:  # every waiting request gets the error, as alone it would
                for waiting in group:
                    if not waiting.done.done():
                        waiting.done.set_exception(exc)

    async def _write(self, group: list[_Waiting]) -> None:
        try:
            rows, alone = await self._commit(group)
        except (psycopg.DataError, psycopg.IntegrityError):
            if len(group) == 1:
                raise
            # One request PostgreSQL cannot store (a NUL in its text, say) must not fail the others:
            # nothing of the group was written; each is submitted alone and only that one fails.
            await asyncio.gather(*(self._submit_alone(w) for w in group))
            return
        written = [w for w in group if w.new.id in rows]
        count_submitted([rows[w.new.id] for w in written])
        await send_after_commit(self.clients, *(rows[w.new.id] for w in written))
        for waiting in written:
            if not waiting.done.done():
                waiting.done.set_result(Submitted(rows[waiting.new.id], created=True))
        if alone:
            await asyncio.gather(*(self._submit_alone(w) for w in alone))

    async def _commit(self, group: list[_Waiting]) -> tuple[dict[UUID, store.JobRow], list[_Waiting]]:
        """Insert and reserve the group in one transaction; (rows written, jobs left to submit alone)."""
        async with self.clients.pool.connection() as conn, conn.transaction():
            rows = await store.insert_jobs(conn, [w.new for w in group])
            holds = [credits.Reservation(row.owner_id, row.id, row.reserved_credits, credits.ledger_model(row))
                     for row in rows if row.reserved_credits > 0]
            short = await credits.reserve_many(conn, holds) if holds else set()
            alone = [w for w in group if w.new.owner_id in short and w.new.reserved_credits > 0]
            if alone:
                await store.delete_new_jobs(conn, [w.new.id for w in alone])
        taken = {w.new.id for w in alone}
        return {row.id: row for row in rows if row.id not in taken}, alone

    async def _submit_alone(self, waiting: _Waiting) -> None:
        new = waiting.new
        try:
            outcome = await submit(self.clients, waiting.job, owner_id=new.owner_id, reserve=new.reserved_credits,
                                   job_id=new.id)
        except Exception as exc:  # handed to the waiting request
            if not waiting.done.done():
                waiting.done.set_exception(exc)
        else:
            if not waiting.done.done():
                waiting.done.set_result(outcome)
