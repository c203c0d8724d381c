"""Operator routes over real HTTP against the real worker and maintenance processes, and the reservation sweep."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import dramatiq
import httpx
import psycopg
import redis

from jobs import credits, store, sweeps
from jobs.db import open_pool
from jobs.ids import uuid7
from jobs.states import Queue
from tests.conftest import Stack, User, chat_job, make_user, wait_for_status

NS = "switchyard"




def account(stack: Stack, user_id: Any) -> tuple[int, int]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT balance, reserved FROM credit_accounts WHERE user_id = %s", (user_id,)).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def job_ledger(stack: Stack, job_id: Any) -> list[tuple[str, int]]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT kind, amount FROM credit_ledger WHERE job_id = %s ORDER BY id",
                            (job_id,)).fetchall()
    return [(r[0], r[1]) for r in rows]


def ledger(stack: Stack, user_id: Any) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT kind, amount, reference FROM credit_ledger WHERE user_id = %s ORDER BY id",
                            (user_id,)).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def wait_until(check: Any, timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_every_admin_route_is_403_for_users(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    grant = {"user_id": str(user.id), "credits": 5, "reason": "self-service"}
    calls = [
        client.post("/v1/admin/credits/grants", json=grant),
        client.get("/v1/admin/queues"),
        client.get("/v1/admin/workers"),
        client.post("/v1/admin/queues/chat/requeue-dead"),
        client.get("/v1/admin/audit"),
    ]
    for resp in await asyncio.gather(*calls):
        assert resp.status_code == 403, (resp.request.url, resp.text)
        assert resp.json()["code"] == "forbidden"
    async with httpx.AsyncClient(base_url=stack.api_url) as anon:
        assert (await anon.get("/v1/admin/queues")).status_code == 401
    await asyncio.sleep(1)
    assert [k for k, _, _ in ledger(stack, user.id)] == ["grant"]  # only make_user's own grant
    assert account(stack, user.id)[0] == 10_000_000


async def test_grant_credits_once_with_a_repeated_idempotency_key(
    admin_client: httpx.AsyncClient, stack: Stack, admin: User
) -> None:
    target = await make_user(stack.env["DATABASE_URL"], credits=0)
    body = {"user_id": str(target.id), "credits": 1_234, "reason": "outage compensation"}
    first = await admin_client.post("/v1/admin/credits/grants", json=body, headers={"Idempotency-Key": "g-1"})
    second = await admin_client.post("/v1/admin/credits/grants", json=body, headers={"Idempotency-Key": "g-1"})
    assert first.status_code == second.status_code == 202, first.text
    job = first.json()
    assert second.json()["id"] == job["id"] and second.headers["idempotent-replayed"] == "true"
    assert job["kind"] == "billing.grant" and job["queue"] == "billing"
    assert first.headers["location"] == f"/v1/jobs/{job['id']}"

    done = await wait_for_status(admin_client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"credited": 1_234, "balance": 1_234, "duplicate": False}
    await asyncio.sleep(1)
    assert account(stack, target.id) == (1_234, 0)
    [(kind, amount, reference)] = ledger(stack, target.id)
    assert (kind, amount) == ("grant", 1_234) and reference and reference.startswith("grant:")

    conflict = await admin_client.post("/v1/admin/credits/grants", json=body | {"credits": 99},
                                       headers={"Idempotency-Key": "g-1"})
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"

    audit = (await admin_client.get("/v1/admin/audit", params={"action": "admin.grant"})).json()["data"]
    assert len(audit) == 1
    assert audit[0]["actor_id"] == str(admin.id) and audit[0]["target"] == str(target.id)
    assert audit[0]["details"]["credits"] == 1_234 and audit[0]["details"]["reason"] == "outage compensation"
    worker_audit = (await admin_client.get("/v1/admin/audit", params={"action": "billing.grant"})).json()["data"]
    assert [a["target"] for a in worker_audit] == [str(target.id)]


async def test_grant_validation(admin_client: httpx.AsyncClient, user: User) -> None:
    cases = [
        ({"user_id": str(user.id), "credits": 0, "reason": "x"}, 400, "validation_error"),
        ({"user_id": str(user.id), "credits": 10**12 + 1, "reason": "x"}, 400, "validation_error"),
        ({"user_id": str(user.id), "credits": 5, "reason": ""}, 400, "validation_error"),
        ({"user_id": str(user.id), "credits": 5, "reason": "x", "bonus": 1}, 400, "validation_error"),
        ({"user_id": str(uuid.uuid4()), "credits": 5, "reason": "x"}, 404, "user_not_found"),
    ]
    for body, status, code in cases:
        resp = await admin_client.post("/v1/admin/credits/grants", json=body)
        assert resp.status_code == status and resp.json()["code"] == code, (body, resp.text)


async def test_queues_and_workers_show_the_running_worker(
    admin_client: httpx.AsyncClient, stack: Stack
) -> None:
    job = (await admin_client.post("/v1/jobs", json=chat_job("[[sim: ttft_ms=5000]] hold the worker"))).json()
    await wait_for_status(admin_client, job["id"], {"running"})
    queues = (await admin_client.get("/v1/admin/queues")).json()["data"]
    assert [q["name"] for q in queues] == [str(q) for q in Queue]
    chat = next(q for q in queues if q["name"] == "chat")
    assert chat["in_flight"] >= 1 and chat["jobs"]["running"] >= 1
    assert {"depth", "delayed", "dead_letters", "oldest_queued_seconds", "oldest_ready_seconds",
            "enqueued_per_second", "completed_per_second"} <= set(chat)
    assert chat["enqueued_per_second"] > 0  # at least our job, in the last minute

    workers = (await admin_client.get("/v1/admin/workers")).json()
    timeout = workers["heartbeat_timeout_ms"]
    assert timeout == stack.settings.heartbeat_timeout_ms
    deadline = time.monotonic() + timeout / 1000
    while not (busy := [w for w in workers["data"] if w["worker"]["in_flight"] and "chat" in w["worker"]["queues"]]):
        assert time.monotonic() < deadline, workers
        await asyncio.sleep(0.2)
        workers = (await admin_client.get("/v1/admin/workers")).json()
    assert len(busy) == 1, workers  # the session's worker process, holding our job
    assert busy[0]["alive"] and 0 <= busy[0]["age_ms"] <= timeout
    assert busy[0]["worker"]["pool"] == "interactive" and busy[0]["worker"]["concurrency"] == 4
    assert {p["pool"] for p in workers["pools"]} >= {"interactive", "bulk"}
    assert (await wait_for_status(admin_client, job["id"]))["status"] == "succeeded"


async def test_requeue_dead_moves_dead_letters_back_to_the_queue(
    admin_client: httpx.AsyncClient, client: httpx.AsyncClient, stack: Stack, redis_client: redis.Redis
) -> None:
    job = (await client.post("/v1/jobs", json=chat_job("dead letter me"))).json()
    done = await wait_for_status(client, job["id"])
    dead_before = redis_client.zcard(f"{NS}:chat.XQ")
    # A dead letter exactly as Dramatiq's `nack` leaves it: id in the XQ zset, body in the XQ hash.
    mid = str(uuid.uuid4())
    message = dramatiq.Message(queue_name="chat", actor_name="run_job:chat", args=(job["id"],), kwargs={},
                               options={"redis_message_id": mid, "retries": 5})
    redis_client.zadd(f"{NS}:chat.XQ", {mid: int(time.time() * 1000)})
    redis_client.hset(f"{NS}:chat.XQ.msgs", mid, message.encode())

    queues = (await admin_client.get("/v1/admin/queues")).json()["data"]
    assert next(q for q in queues if q["name"] == "chat")["dead_letters"] == dead_before + 1

    resp = await admin_client.post("/v1/admin/queues/chat/dead-letters/requeue", json={"message_ids": [mid]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"queue": "chat", "requeued": 1, "remaining": dead_before, "job_ids": [job["id"]]}
    assert redis_client.zscore(f"{NS}:chat.XQ", mid) is None
    assert not redis_client.hexists(f"{NS}:chat.XQ.msgs", mid)
    # The worker received it (its claim found the job finished and did nothing) and acked it.
    await wait_until(lambda: "not claimable" in stack.worker.log() and job["id"] in stack.worker.log()
                     and not redis_client.hexists(f"{NS}:chat.msgs", mid), what="the requeued delivery")
    again = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert again["status"] == "succeeded" and again["claims"] == 1
    assert again["finished_at"] == done["finished_at"] and again["result"] == done["result"]

    audit = (await admin_client.get("/v1/admin/audit", params={"action": "admin.requeue"})).json()["data"]
    assert audit[0]["target"] == "chat" and audit[0]["details"]["requeued"] == 1
    missing = await admin_client.post("/v1/admin/queues/nope/requeue-dead")
    assert missing.status_code == 404 and missing.json()["code"] == "queue_not_found"


async def _reserved_job(stack: Stack, owner: User, amount: int, *, age_days: float = 0,
                        status: str | None = None) -> uuid.UUID:
    """A job row holding `amount` credits, optionally back-dated or forced into a status (an old code path)."""
    pool = await open_pool(stack.env["DATABASE_URL"])
    try:
        async with pool.connection() as conn, conn.transaction():
            row, _ = await store.insert_job(
                conn, job_id=uuid7(), owner_id=owner.id, kind="chat.completion", queue="chat",
                input={"model": "sim-small", "messages": [{"role": "user", "content": "stale"}]},
                metadata=None, idempotency_key=None, request_hash=None,
            )
            await credits.reserve(conn, owner.id, row.id, amount, "sim-small")
            await conn.execute("UPDATE jobs SET created_at = now() - %s * interval '1 day', reserved_credits = %s,"
                               " status = coalesce(%s, status) WHERE id = %s", (age_days, amount, status, row.id))
        return row.id
    finally:
        await pool.close()


async def test_maintenance_expires_stale_jobs_and_releases_their_credits(
    client: httpx.AsyncClient, stack: Stack, user: User, redis_client: redis.Redis
) -> None:
    before = account(stack, user.id)
    job_id = await _reserved_job(stack, user, 500, age_days=2)
    assert account(stack, user.id) == (before[0] - 500, 500)

    expired = await wait_for_status(client, str(job_id), {"failed"}, timeout=10)
    assert expired["error"]["code"] == "job_expired"
    assert expired["claims"] == 0  # failed by the sweep, never sent to a worker again
    assert job_ledger(stack, job_id) == [("reserve", 500), ("settle", 0), ("release", 500)]
    assert account(stack, user.id) == before
    events = [fields[b"e"] for _, fields in redis_client.xrange(f"sy:{{{job_id}}}:events")]
    assert len(events) == 1 and b'"type":"failed"' in events[0] and b"job_expired" in events[0]


async def test_young_jobs_are_not_expired(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    job_id = await _reserved_job(stack, user, 300, age_days=0.9)  # under the one-day expiry
    # Unsent, so the reconciler sends it after a couple of seconds and it runs normally.
    done = await wait_for_status(client, str(job_id), timeout=20)
    assert done["status"] == "succeeded", done
    assert [k for k, _ in job_ledger(stack, job_id)] == ["reserve", "settle", "release"]


async def test_finished_job_with_an_unsettled_reservation_is_released(stack: Stack, user: User) -> None:
    before = account(stack, user.id)
    job_id = await _reserved_job(stack, user, 700, status="failed")
    assert account(stack, user.id) == (before[0] - 700, 700)
    pool = await open_pool(stack.env["DATABASE_URL"])
    try:
        released = await sweeps.release_orphaned(pool, since=sweeps.id_floor(time.time() - 60))
        # The maintenance loop may have got there first; either way the credits are back exactly once.
        assert released in ([(job_id, user.id, 700)], [])
        assert await sweeps.release_orphaned(pool) == []
    finally:
        await pool.close()
    assert account(stack, user.id) == before
    assert [(k, a) for k, a, _ in ledger(stack, user.id)][-2:] == [("settle", 0), ("release", 700)]
