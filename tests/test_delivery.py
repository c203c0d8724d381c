"""At-least-once delivery, exactly-once execution, and the reconciler."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import psycopg
import redis

from jobs import store
from jobs.broker import make_broker
from jobs.db import open_pool
from jobs.enqueue import send_job
from jobs.ids import uuid7
from tests.conftest import ERROR_MARKER, Stack, User, chat_job, wait_for_status


async def insert_unsent_job(database_url: str, owner: User, content: str) -> uuid.UUID:
    """Commit a job row without sending its message: a crash between commit and send."""
    pool = await open_pool(database_url)
    try:
        async with pool.connection() as conn:
            row, created = await store.insert_job(
                conn, job_id=uuid7(), owner_id=owner.id, kind="chat.completion", queue="chat",
                input={"model": "sim-small", "messages": [{"role": "user", "content": content}]},
                metadata=None, idempotency_key=None, request_hash=None,
            )
        assert created
        return row.id
    finally:
        await pool.close()


def event_types(redis_client: redis.Redis, job_id: Any) -> list[str]:
    import json

    entries = redis_client.xrange(f"sy:{{{job_id}}}:events")
    return [json.loads(fields[b"e"])["type"] for _, fields in entries]


async def test_duplicate_deliveries_run_the_job_once(
    client: httpx.AsyncClient, stack: Stack, user: User, redis_client: redis.Redis
) -> None:
    job_id = await insert_unsent_job(stack.env["DATABASE_URL"], user, "[[sim: ttft_ms=200]] once only")
    broker = make_broker(stack.settings, middleware=[])
    try:
        # Five copies of the message, sent concurrently, as redelivery after a lost ack would.
        await asyncio.gather(*[asyncio.to_thread(send_job, broker, job_id, "chat") for _ in range(5)])
    finally:
        broker.close()
    done = await wait_for_status(client, str(job_id))
    assert done["status"] == "succeeded"
    assert done["claims"] == 1
    assert len(done["attempts"]) == 1
    await asyncio.sleep(0.5)  # let any straggling duplicate reach a worker
    types = event_types(redis_client, job_id)
    assert types.count("started") == 1 and types.count("succeeded") == 1


async def test_reconciler_sends_a_job_whose_message_was_lost(
    client: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    started = time.monotonic()
    job_id = await insert_unsent_job(stack.env["DATABASE_URL"], user, "lost in transit")
    done = await wait_for_status(client, str(job_id), timeout=20)
    assert done["status"] == "succeeded"
    # Re-sent after SWITCHYARD_RECONCILE_AFTER_SECONDS=2, on a 0.5 s tick.
    assert time.monotonic() - started >= 1.5
    assert "re-sent a job whose message was lost" in stack.maintenance.log()


async def test_job_of_a_worker_that_vanished_is_reclaimed_after_its_lease(
    client: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    job_id = await insert_unsent_job(stack.env["DATABASE_URL"], user, "orphaned")
    # As if a worker claimed it and died: running, lease already expired, message gone.
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            """UPDATE jobs SET status = 'running', attempts = 1, worker_id = 'ghost:1',
                   lease_until = now() - interval '1 second', enqueued_at = now() - interval '1 minute'
               WHERE id = %s""",
            (job_id,),
        )
    done = await wait_for_status(client, str(job_id), timeout=20)
    assert done["status"] == "succeeded"
    assert done["claims"] == 2


async def test_a_stale_worker_cannot_overwrite_a_finished_job(stack: Stack, user: User) -> None:
    job_id = await insert_unsent_job(stack.env["DATABASE_URL"], user, "fenced")
    pool = await open_pool(stack.env["DATABASE_URL"])
    try:
        first = await store.claim(pool, job_id, "w1", lease_seconds=0)
        assert first is not None
        await asyncio.sleep(0.01)
        second = await store.claim(pool, job_id, "w2", lease_seconds=60)  # lease expired: reclaimed
        assert second is not None and second.attempts == first.attempts + 1
        async with pool.connection() as conn:
            assert not await store.finish(conn, job_id, first.attempts, store.Status.SUCCEEDED, result={"x": 1})
            assert await store.finish(conn, job_id, second.attempts, store.Status.SUCCEEDED, result={"x": 2})
            assert not await store.finish(conn, job_id, second.attempts, store.Status.FAILED)
        assert await store.claim(pool, job_id, "w3", lease_seconds=60) is None
        row = await store.get_job(pool, job_id, None)
        assert row is not None and row.status == "succeeded" and row.result == {"x": 2}
    finally:
        await pool.close()


async def test_infrastructure_errors_are_retried_then_dead_lettered_and_the_job_fails(
    client: httpx.AsyncClient, stack: Stack, user: User, redis_client: redis.Redis
) -> None:
    dead_before = redis_client.zcard("switchyard:chat.XQ")
    job = (await client.post("/v1/jobs", json=chat_job(f"{ERROR_MARKER} boom"))).json()
    done = await wait_for_status(client, job["id"], timeout=30)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "delivery_failed"
    assert done["claims"] == 2  # the first run and Dramatiq's one retry (SWITCHYARD_DELIVERY_RETRIES=1)
    assert redis_client.zcard("switchyard:chat.XQ") == dead_before + 1  # the message is in the dead-letter queue
    types = event_types(redis_client, job["id"])
    assert types[-1] == "failed"
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        kinds = dict(conn.execute("SELECT kind, amount FROM credit_ledger WHERE job_id = %s", (job["id"],)).fetchall())
    assert kinds["release"] == kinds["reserve"] and kinds["settle"] == 0  # credits given back


async def test_the_reconciler_tells_a_waiting_message_from_a_lost_one(stack: Stack,
                                                                     redis_client: redis.Redis) -> None:
    # Messages are stored under their job's id, so a long queue (a draining batch) is not re-sent.
    from redis.asyncio import Redis

    from jobs.broker import unsent

    broker = make_broker(stack.settings, middleware=[])
    client = Redis.from_url(stack.env["REDIS_URL"])
    waiting, lost = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        assert broker.send_jobs([(waiting, "test-unconsumed")]) == 1
        found = await unsent(client, [(waiting, "test-unconsumed"), (lost, "test-unconsumed")])
        assert found == [(lost, "test-unconsumed")]
        assert redis_client.lrange("switchyard:test-unconsumed", 0, -1) == [waiting.encode()]
    finally:
        redis_client.delete("switchyard:test-unconsumed", "switchyard:test-unconsumed.msgs")
        await client.aclose()
        broker.close()


async def test_a_withdrawn_message_is_passed_over_by_the_fetch(stack: Stack, redis_client: redis.Redis) -> None:
    from redis.asyncio import Redis

    from jobs.broker import withdraw

    broker = make_broker(stack.settings, middleware=[])
    ids = [str(uuid.uuid4()) for _ in range(3)]
    queue = "test-withdrawn"
    client = Redis.from_url(stack.env["REDIS_URL"])
    try:
        broker.send_jobs([(job_id, queue) for job_id in ids])
        await withdraw(client, [(ids[1], queue)])
        bodies = broker.fetch_live(queue, 10)
        assert [json.loads(b)["args"] for b in bodies] == [[ids[0]], [ids[2]]]
        acks = redis_client.smembers(f"switchyard:__acks__.{broker.broker_id}.{queue}")
        assert acks == {ids[0].encode(), ids[2].encode()}  # the withdrawn id is not held as in flight
        assert redis_client.llen(f"switchyard:{queue}") == 0
    finally:
        redis_client.delete(f"switchyard:{queue}", f"switchyard:{queue}.msgs",
                            f"switchyard:__acks__.{broker.broker_id}.{queue}")
        await client.aclose()
        broker.close()


def test_a_dead_workers_messages_go_back_to_the_head_of_their_queue(stack: Stack,
                                                                    redis_client: redis.Redis) -> None:
    """A killed worker's job was taken from the head: behind a backlog it must not wait for the whole queue."""
    broker = make_broker(stack.settings, middleware=[], maintenance=True)
    ns, queue = broker.namespace, f"head-first-{uuid.uuid4().hex[:6]}"
    redis_client.hset(f"{ns}:{queue}.msgs", mapping={"waiting-1": b"{}", "waiting-2": b"{}", "orphan": b"{}"})
    redis_client.rpush(f"{ns}:{queue}", "waiting-1", "waiting-2")
    redis_client.zadd(f"{ns}:__heartbeats__", {"killed-worker": 0})
    redis_client.sadd(f"{ns}:__acks__.killed-worker.{queue}", "orphan")
    try:
        broker.do_qsize(queue)  # any command runs the maintenance on a maintenance broker
        assert redis_client.lrange(f"{ns}:{queue}", 0, -1) == [b"orphan", b"waiting-1", b"waiting-2"]
    finally:
        redis_client.delete(f"{ns}:{queue}", f"{ns}:{queue}.msgs")
        broker.close()


async def test_an_ending_whose_announcement_died_is_announced_once(stack: Stack, user: User,
                                                                   redis_client: redis.Redis) -> None:
    """The events' outbox: a job committed as finished by a process killed before it published the end."""
    from jobs.events import ENDING_KEY, EventLog
    from jobs.redis import async_client
    from jobs.states import EventType

    job_id = uuid7()
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, owner_id, kind, queue, input, status, result, attempts, started_at, finished_at) "
            "VALUES (%s, %s, 'chat.completion', 'chat', '{}'::jsonb, 'succeeded', '{\"content\": \"done\"}'::jsonb, "
            "1, now(), now())", (job_id, user.id))
    redis_client.zadd(ENDING_KEY, {str(job_id): time.time() - 60})  # what `_finish` noted before its commit
    deadline = time.monotonic() + 10
    while redis_client.zscore(ENDING_KEY, str(job_id)) is not None:
        assert time.monotonic() < deadline, "the maintenance loop did not announce the missed end"
        await asyncio.sleep(0.1)
    assert event_types(redis_client, job_id) == ["succeeded"]
    # The killed worker's process did not really die (a long pause): its late publish is dropped.
    events = EventLog(async_client(stack.env["REDIS_URL"]), 3600)
    try:
        assert await events.publish(job_id, user.id, EventType.SUCCEEDED, {"result": {}}) == 0
    finally:
        await events.redis.aclose()
    assert event_types(redis_client, job_id) == ["succeeded"]
    assert "announced the end of a job whose process died" in stack.maintenance.log()
