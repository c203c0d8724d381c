"""The job store: every read and state transition of a job, in SQL.

Each transition is a conditional UPDATE whose WHERE clause states the only
states it may leave from, so a duplicate delivery, a late worker whose lease
expired, or a cancel racing a completion can never overwrite a terminal state.
Workers fence their writes with the claim number (`attempts`): a worker that
lost its lease finds its UPDATE matching no row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import kwargs_row
from psycopg_pool import AsyncConnectionPool

from jobs.states import Status


class JobRow(msgspec.Struct, kw_only=True):
    """A row of the `jobs` table."""

    id: UUID
    owner_id: UUID
    kind: str
    queue: str
    status: str
    #: The job's input (`jobs/kinds.py`), as stored: decode it with `kinds.decode_job(kind, input)`.
    input: dict[str, Any]
    metadata: dict[str, Any] | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    usage: dict[str, Any] | None
    attempts: int
    max_attempts: int
    idempotency_key: str | None
    request_hash: bytes | None
    worker_id: str | None
    lease_until: datetime | None
    created_at: datetime
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reserved_credits: int = 0
    charged_credits: int | None = None
    #: A batch line: its batch and `custom_id` (`jobs/batches.py`).
    batch_id: str | None = None
    custom_id: str | None = None
    #: Where the job's end is reported (a `webhook.deliver` job is created with its end).
    callback_url: str | None = None


class AttemptRow(msgspec.Struct, kw_only=True):
    """A row of `job_attempts`: one provider call."""

    attempt: int
    provider: str
    model: str
    started_at: datetime
    latency_ms: float
    ttft_ms: float | None
    outcome: str
    error_code: str | None
    error_message: str | None
    usage: dict[str, Any] | None


_COLUMNS = ", ".join(JobRow.__struct_fields__)
_ATTEMPT_COLUMNS = ", ".join(AttemptRow.__struct_fields__)
_job_row = kwargs_row(JobRow)


def _json(value: Any) -> str | None:
    """A value as JSON text for a `%s::jsonb` parameter."""
    return None if value is None else msgspec.json.encode(value).decode()


async def insert_job(
    conn: AsyncConnection[Any],
    *,
    job_id: UUID,
    owner_id: UUID,
    kind: str,
    queue: str,
    input: Any,
    metadata: Any,
    idempotency_key: str | None,
    request_hash: bytes | None,
    max_attempts: int = 5,
    reserved_credits: int = 0,
    callback_url: str | None = None,
) -> tuple[JobRow, bool]:
    """Insert a queued job; with an idempotency key already used, return that job instead.

    Returns the row and whether it was created by this call.
    """
    async with conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(
            f"""
            INSERT INTO jobs (id, owner_id, kind, queue, input, metadata, idempotency_key, request_hash,
                              max_attempts, reserved_credits, callback_url)
            VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s)
            ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING {_COLUMNS}
            """,
            (job_id, owner_id, kind, queue, _json(input), _json(metadata), idempotency_key, request_hash,
             max_attempts, reserved_credits, callback_url),
        )
        row = await cur.fetchone()
        if row is not None:
            return row, True
        # The key was used before: the conflicting row is visible to us once its
        # inserter committed (ON CONFLICT waits for it), so this SELECT finds it.
        await cur.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE owner_id = %s AND idempotency_key = %s",
            (owner_id, idempotency_key),
        )
        existing = await cur.fetchone()
        assert existing is not None
        return existing, False


class NewJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job to insert with `insert_jobs` (no idempotency key: each is new)."""

    id: UUID
    owner_id: UUID
    kind: str
    queue: str
    input: Any
    metadata: Any
    max_attempts: int
    reserved_credits: int
    callback_url: str | None = None


async def insert_jobs(conn: AsyncConnection[Any], jobs: list[NewJob]) -> list[JobRow]:
    """Insert queued jobs in one statement; their rows, in the order given."""
    async with conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(
            f"""
            INSERT INTO jobs (id, owner_id, kind, queue, input, metadata, max_attempts, reserved_credits,
                              callback_url)
            SELECT id, owner_id, kind, queue, input::jsonb, metadata::jsonb, max_attempts, reserved_credits,
                   callback_url
            FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[],
                        %s::bigint[], %s::text[])
                 AS t(id, owner_id, kind, queue, input, metadata, max_attempts, reserved_credits, callback_url)
            RETURNING {_COLUMNS}
            """,
            ([j.id for j in jobs], [j.owner_id for j in jobs], [j.kind for j in jobs], [j.queue for j in jobs],
             [_json(j.input) for j in jobs], [_json(j.metadata) for j in jobs], [j.max_attempts for j in jobs],
             [j.reserved_credits for j in jobs], [j.callback_url for j in jobs]),
        )
        rows = {row.id: row for row in await cur.fetchall()}
    return [rows[j.id] for j in jobs]


async def delete_new_jobs(conn: AsyncConnection[Any], job_ids: list[UUID]) -> None:
    """Take back jobs inserted earlier in the caller's transaction (never seen by anyone else)."""
    await conn.execute("DELETE FROM jobs WHERE id = ANY(%s)", (job_ids,))


async def get_job(pool: AsyncConnectionPool, job_id: UUID, owner_id: UUID | None) -> JobRow | None:
    """One job, if it exists and `owner_id` owns it (`None`: any owner, for admins and workers)."""
    async with pool.connection() as conn, conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE id = %s AND (%s::uuid IS NULL OR owner_id = %s)",
            (job_id, owner_id, owner_id),
        )
        return await cur.fetchone()


async def get_jobs(pool: AsyncConnectionPool, job_ids: list[UUID]) -> list[JobRow]:
    """The jobs of `job_ids` that exist (any owner), in no particular order."""
    async with pool.connection() as conn, conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ANY(%s)", (job_ids,))
        return await cur.fetchall()


async def list_jobs(
    pool: AsyncConnectionPool,
    owner_id: UUID,
    *,
    status: str | None = None,
    kind: str | None = None,
    before: UUID | None = None,
    limit: int = 20,
) -> list[JobRow]:
    """The owner's jobs, newest first; `before` is the cursor (the last id of the previous page)."""
    return await list_all_jobs(pool, owner_id=owner_id, status=status, kind=kind, before=before, limit=limit)


async def list_all_jobs(
    pool: AsyncConnectionPool,
    *,
    owner_id: UUID | None = None,
    status: str | None = None,
    kind: str | None = None,
    queue: str | None = None,
    batch_id: str | None = None,
    before: UUID | None = None,
    limit: int = 50,
) -> list[JobRow]:
    """Jobs of every user (operators), newest first, filtered; `before` is the cursor."""
    async with pool.connection() as conn, conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(
            f"""
            SELECT {_COLUMNS} FROM jobs
            WHERE (%(owner)s::uuid IS NULL OR owner_id = %(owner)s)
              AND (%(status)s::text IS NULL OR status = %(status)s)
              AND (%(kind)s::text IS NULL OR kind = %(kind)s)
              AND (%(queue)s::text IS NULL OR queue = %(queue)s)
              AND (%(batch)s::text IS NULL OR batch_id = %(batch)s)
              AND (%(before)s::uuid IS NULL OR id < %(before)s)
            ORDER BY id DESC
            LIMIT %(limit)s
            """,
            {"owner": owner_id, "status": status, "kind": kind, "queue": queue, "batch": batch_id,
             "before": before, "limit": limit},
        )
        return await cur.fetchall()


async def grant_attempts(pool: AsyncConnectionPool, job_ids: list[str], extra: int) -> int:
    """Give unfinished jobs `extra` more claims before quarantine (an operator requeued them); how many."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE jobs SET max_attempts = attempts + %s"
            " WHERE id = ANY(%s::uuid[]) AND status IN ('queued', 'running')",
            (extra, job_ids),
        )
        return cur.rowcount


async def list_attempts(pool: AsyncConnectionPool, job_id: UUID) -> list[AttemptRow]:
    """Every provider call made for a job, oldest first."""
    async with pool.connection() as conn, conn.cursor(row_factory=kwargs_row(AttemptRow)) as cur:
        await cur.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM job_attempts WHERE job_id = %s ORDER BY id", (job_id,)
        )
        return await cur.fetchall()


async def claim(pool: AsyncConnectionPool, job_id: UUID, worker_id: str, lease_seconds: float) -> JobRow | None:
    """Take a queued job (or one whose lease expired) for this worker; `None` if it is not claimable.

    A duplicate delivery of a job that is running under a live lease, or that
    already finished, claims nothing — that is what makes delivery
    at-least-once but execution once.
    """
    async with pool.connection() as conn, conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(
            f"""
            UPDATE jobs
            SET status = 'running', attempts = attempts + 1, worker_id = %s,
                lease_until = now() + make_interval(secs => %s),
                started_at = coalesce(started_at, now())
            WHERE id = %s
              AND (status = 'queued' OR (status = 'running' AND lease_until < now()))
            RETURNING {_COLUMNS}
            """,
            (worker_id, lease_seconds, job_id),
        )
        return await cur.fetchone()


async def renew_lease(pool: AsyncConnectionPool, job_id: UUID, attempt: int, lease_seconds: float) -> bool:
    """Extend a running job's lease; False when this worker no longer holds it."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            UPDATE jobs SET lease_until = now() + make_interval(secs => %s)
            WHERE id = %s AND status = 'running' AND attempts = %s
            """,
            (lease_seconds, job_id, attempt),
        )
        return cur.rowcount == 1


async def finish(
    conn: AsyncConnection[Any],
    job_id: UUID,
    attempt: int,
    status: Status,
    *,
    result: Any = None,
    error: Any = None,
    usage: Any = None,
) -> bool:
    """Move a running job held by claim `attempt` to a terminal state; False if it was not ours to finish."""
    cur = await conn.execute(
        """
        UPDATE jobs
        SET status = %s, result = %s::jsonb, error = %s::jsonb, usage = %s::jsonb,
            finished_at = now(), lease_until = NULL
        WHERE id = %s AND status = 'running' AND attempts = %s
        """,
        (status, _json(result), _json(error), _json(usage), job_id, attempt),
    )
    return cur.rowcount == 1


async def cancel(conn: AsyncConnection[Any], job_id: UUID, owner_id: UUID | None, error: Any) -> JobRow | None:
    """Cancel a queued or running job; None when it does not exist for this owner or already finished."""
    async with conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(
            f"""
            UPDATE jobs SET status = 'cancelled', finished_at = now(), lease_until = NULL, error = %s::jsonb
            WHERE id = %s AND (%s::uuid IS NULL OR owner_id = %s) AND status IN ('queued', 'running')
            RETURNING {_COLUMNS}
            """,
            (_json(error), job_id, owner_id, owner_id),
        )
        return await cur.fetchone()


async def fail_unfinished(conn: AsyncConnection[Any], job_id: UUID, error: Any, *,
                          skip_locked: bool = False) -> JobRow | None:
    """Fail a job that is not finished yet, whoever holds it; None if it finished meanwhile.

    With `skip_locked`, a job whose row another transaction holds (a worker
    finishing it, a cancel) is left alone rather than waited for.
    """
    lock = "FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE"
    async with conn.cursor(row_factory=_job_row) as cur:
        await cur.execute(
            f"""
            UPDATE jobs SET status = 'failed', error = %s::jsonb, finished_at = now(), lease_until = NULL
            WHERE id = (SELECT id FROM jobs WHERE id = %s AND status IN ('queued', 'running') {lock})
            RETURNING {_COLUMNS}
            """,
            (_json(error), job_id),
        )
        return await cur.fetchone()


async def stale_jobs(pool: AsyncConnectionPool, older_than_seconds: float, limit: int = 100) -> list[UUID]:
    """Up to `limit` jobs still queued or running `older_than_seconds` after their submission.

    Batch lines are not among them: their batch's `completion_window` decides (`jobs/batches.py`).
    """
    async with pool.connection() as conn:
        # Reads the partial index of live jobs: the cost follows the number of live jobs, not the table.
        cur = await conn.execute(
            """
            SELECT id FROM jobs
            WHERE status IN ('queued', 'running') AND created_at < now() - make_interval(secs => %s)
              AND batch_id IS NULL
            LIMIT %s
            """,
            (older_than_seconds, limit),
        )
        return [row[0] for row in await cur.fetchall()]


async def release(pool: AsyncConnectionPool, job_id: UUID, attempt: int) -> bool:
    """Give a running job back to the queue (retry later); False if it was not ours."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            UPDATE jobs SET status = 'queued', lease_until = NULL, worker_id = NULL, enqueued_at = now()
            WHERE id = %s AND status = 'running' AND attempts = %s
            """,
            (job_id, attempt),
        )
        return cur.rowcount == 1


async def record_attempts(conn: AsyncConnection[Any], job_id: UUID, attempts: list[AttemptRow]) -> None:
    """Append provider calls to the job's attempt log (one round trip for all of them)."""
    if not attempts:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            f"""
            INSERT INTO job_attempts (job_id, {_ATTEMPT_COLUMNS})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
            """,
            [(job_id, a.attempt, a.provider, a.model, a.started_at, a.latency_ms, a.ttft_ms, a.outcome,
              a.error_code, a.error_message, _json(a.usage)) for a in attempts],
        )


async def due_for_resend(
    pool: AsyncConnectionPool, older_than_seconds: float, limit: int = 500
) -> list[tuple[UUID, str, str]]:
    """Jobs whose message may be lost: queued too long, or running with an expired lease.

    Marks them as sent now (so the next sweep skips them) and returns (id, queue,
    status) to check and send again. A duplicate message is harmless: its claim
    turns it into a no-op. Queued batch lines are left to their batch
    (`jobs.batches.Tracker`), so a draining batch never crowds out the rest.
    """
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            WITH queued AS (
                SELECT id FROM jobs
                WHERE status = 'queued' AND batch_id IS NULL AND enqueued_at < now() - make_interval(secs => %(s)s)
                ORDER BY enqueued_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            ), lapsed AS (
                SELECT id FROM jobs
                WHERE status = 'running' AND lease_until < now() AND enqueued_at < now() - make_interval(secs => %(s)s)
                ORDER BY enqueued_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            )
            UPDATE jobs SET enqueued_at = now()
            WHERE id IN (SELECT id FROM queued UNION ALL SELECT id FROM lapsed)
            RETURNING id, queue, status
            """,
            {"s": older_than_seconds, "limit": limit},
        )
        return [(row[0], row[1], row[2]) for row in await cur.fetchall()]
