"""Reservation repair: no credits stay held by a finished job that was never settled.

    release_orphaned   finished jobs with a `reserve` ledger row but no `settle` row → reservation released

(Jobs that never finish are expired by `jobs.lifecycle.expire`, which
releases their credits as it fails them.) Candidates are picked by one read;
then each job gets a transaction of its own that re-checks its state under
`FOR UPDATE SKIP LOCKED`, so several maintenance loops never block each
other, and whoever loses the race simply changes nothing. The ledger makes
the release itself idempotent (one `settle`/`release` row per job).
"""

from __future__ import annotations

from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from jobs import credits


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
                SELECT j.owner_id, coalesce(j.input->>'model', j.kind), r.amount
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
