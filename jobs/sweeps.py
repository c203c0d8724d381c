"""Reservation sweeps: no credits stay held by a job that will never settle.

    expire_stale       queued/running jobs older than the job expiry → failed `job_expired`, reservation released
    release_orphaned   finished jobs with a `reserve` ledger row but no `settle` row → reservation released

Candidates are picked by one read; then each job gets a transaction of its
own that re-checks its state under `FOR UPDATE SKIP LOCKED`, so several
maintenance loops, a worker finishing the same job or a cancel never block
each other, and whoever loses the race simply changes nothing. The ledger
makes the release itself idempotent (one `settle`/`release` row per job).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from psycopg.rows import kwargs_row
from psycopg_pool import AsyncConnectionPool

from jobs import credits, store

_COLUMNS = ", ".join(store.JobRow.__struct_fields__)


def expired_error(expiry_seconds: int) -> dict[str, Any]:
    """The error stored on an expired job."""
    return {"code": "job_expired", "expiry_seconds": expiry_seconds,
            "message": f"the job did not finish within {expiry_seconds} s of its submission; "
                       "its reserved credits were released"}


async def expire_stale(pool: AsyncConnectionPool, expiry_seconds: int, limit: int = 100) -> list[store.JobRow]:
    """Fail up to `limit` jobs still queued or running `expiry_seconds` after submission; returns them."""
    async with pool.connection() as conn:
        # Reads the partial index of live jobs: the cost follows the number of live jobs, not the table.
        cur = await conn.execute(
            """
            SELECT id FROM jobs
            WHERE status IN ('queued', 'running') AND created_at < now() - make_interval(secs => %s)
            LIMIT %s
            """,
            (expiry_seconds, limit),
        )
        candidates = [row[0] for row in await cur.fetchall()]
    error = msgspec.json.encode(expired_error(expiry_seconds)).decode()
    expired = []
    for job_id in candidates:
        async with pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=kwargs_row(store.JobRow)) as rows:
                await rows.execute(
                    f"""
                    UPDATE jobs SET status = 'failed', error = %s::jsonb, finished_at = now(), lease_until = NULL
                    WHERE id = (SELECT id FROM jobs WHERE id = %s AND status IN ('queued', 'running')
                                FOR UPDATE SKIP LOCKED)
                    RETURNING {_COLUMNS}
                    """,
                    (error, job_id),
                )
                row = await rows.fetchone()
            if row is None:
                continue  # finished, cancelled or locked meanwhile
            # The ledger's `reserve` row is what is held (the job's own column is a copy).
            cur = await conn.execute("SELECT amount FROM credit_ledger WHERE job_id = %s AND kind = 'reserve'",
                                     (row.id,))
            held = await cur.fetchone()
            if held:
                row.reserved_credits = int(held[0])
                await credits.release_all(conn, row.owner_id, row.id, row.reserved_credits,
                                          str(row.payload.get("model") or row.kind))
        expired.append(row)
    return expired


def id_floor(unix_seconds: float) -> UUID:
    """The smallest UUIDv7 of that instant: `id >= id_floor(t)` selects jobs created since `t` by primary key."""
    return UUID(int=(int(unix_seconds * 1000) << 80) | (0x7 << 76) | (0b10 << 62))


async def release_orphaned(pool: AsyncConnectionPool, *, since: UUID | None = None,
                           limit: int = 100) -> list[tuple[UUID, UUID, int]]:
    """Release the reservations of finished jobs that were never settled (an old code path, a bug).

    `since` restricts the search to jobs created from that id on (a primary-key
    range); None searches every job. Returns (job id, owner id, credits released).
    """
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT j.id FROM jobs j
            JOIN credit_ledger r ON r.job_id = j.id AND r.kind = 'reserve'
            WHERE (%(since)s::uuid IS NULL OR j.id >= %(since)s)
              AND j.status IN ('succeeded', 'failed', 'cancelled')
              AND NOT EXISTS (SELECT 1 FROM credit_ledger s WHERE s.job_id = j.id AND s.kind = 'settle')
            LIMIT %(limit)s
            """,
            {"since": since, "limit": limit},
        )
        candidates = [row[0] for row in await cur.fetchall()]
    released = []
    for job_id in candidates:
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                SELECT j.owner_id, coalesce(j.payload->>'model', j.kind), r.amount
                FROM jobs j JOIN credit_ledger r ON r.job_id = j.id AND r.kind = 'reserve'
                WHERE j.id = %s AND j.status IN ('succeeded', 'failed', 'cancelled')
                  AND NOT EXISTS (SELECT 1 FROM credit_ledger s WHERE s.job_id = j.id AND s.kind = 'settle')
                FOR UPDATE OF j SKIP LOCKED
                """,
                (job_id,),
            )
            row = await cur.fetchone()
            if row is None:
                continue
            owner_id, model, amount = row
            # A settlement of 0: the whole reservation goes back to the balance.
            await credits.release_all(conn, owner_id, job_id, int(amount), model)
        released.append((job_id, owner_id, int(amount)))
    return released
