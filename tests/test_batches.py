"""Batches with the unchanged `openai` SDK: files in, lines on the bulk lane, files out, credits once."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
import redis
from standardwebhooks import Webhook

from jobs.batches import ENDPOINTS, Validation
from jobs.catalog import load_catalog
from scripts.procs import start_worker
from scripts.simulator.text import embed
from tests.conftest import Stack, User, chat_job, make_user
from tests.test_streaming import sse_events
from tests.test_webhooks import _received, receive  # noqa: F401  (the fixture)

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def sdk(stack: Stack, user: User) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.api_url + "/v1", api_key=user.key, max_retries=0)


def chat_line(custom_id: str, content: str, *, model: str = "sim-small", max_tokens: int = 5) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}}


def jsonl(tmp_path: Path, lines: list[Any], name: str = "input.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


async def submit(client: openai.AsyncOpenAI, path: Path, endpoint: str = "/v1/chat/completions",
                 **extra: Any) -> Any:
    uploaded = await client.files.create(file=path, purpose="batch")
    return await client.batches.create(input_file_id=uploaded.id, endpoint=endpoint,  # type: ignore[arg-type]
                                       completion_window=extra.pop("window", "24h"), **extra)


async def wait_batch(client: openai.AsyncOpenAI, batch_id: str, statuses: set[str] = TERMINAL,
                     timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} stuck in {batch.status}: {batch}"
        await asyncio.sleep(0.1)


async def lines_of(client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = (await client.files.content(file_id)).text
    entries = [json.loads(line) for line in text.splitlines()]
    by_id = {e["custom_id"]: e for e in entries}
    assert len(by_id) == len(entries), "a custom_id appears twice"
    return by_id


async def account(stack: Stack, user: User) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"]) as conn:
        row = await (await conn.execute("SELECT balance, reserved FROM credit_accounts WHERE user_id = %s",
                                        (user.id,))).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def ledger_sums(stack: Stack, user: User) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"]) as conn:
        rows = await (await conn.execute("SELECT kind, sum(amount) FROM credit_ledger WHERE user_id = %s "
                                         "GROUP BY kind", (user.id,))).fetchall()
    return {kind: int(total) for kind, total in rows}


async def assert_settled_once(stack: Stack, user: User, batch_id: str, lines: int) -> None:
    """Every line settled at most once, the batch's reservation fully accounted for, nothing left held."""
    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"]) as conn:
        rows = await (await conn.execute(
            """SELECT count(*), count(DISTINCT l.job_id) FROM credit_ledger l JOIN jobs j ON j.id = l.job_id
               WHERE j.batch_id = %s AND l.kind = 'settle'""", (batch_id,))).fetchone()
        total_jobs = await (await conn.execute("SELECT count(*) FROM jobs WHERE batch_id = %s",
                                               (batch_id,))).fetchone()
    assert rows is not None and total_jobs is not None
    assert rows[0] == rows[1], "a line was settled twice"
    assert total_jobs[0] == lines, "a line was created twice or lost"
    sums = await ledger_sums(stack, user)
    assert sums.get("reserve", 0) == sums.get("settle", 0) + sums.get("release", 0)
    assert (await account(stack, user))[1] == 0


async def test_chat_batch_round_trip_with_the_sdk(stack: Stack, user: User, tmp_path: Path) -> None:
    client = sdk(stack, user)
    prompts = {f"req-{i}": f"Batch prompt number {i}" for i in range(30)}
    path = jsonl(tmp_path, [chat_line(cid, text) for cid, text in prompts.items()])
    before = (await account(stack, user))[0]
    batch = await submit(client, path, metadata={"project": "demo"})
    assert batch.status == "in_progress" and batch.request_counts.total == 30
    assert batch.metadata == {"project": "demo"} and batch.in_progress_at is not None
    assert (await account(stack, user))[1] > 0  # the whole batch's worst case is held
    done = await wait_batch(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (30, 0)
    assert done.completed_at and done.finalizing_at and done.error_file_id is None
    output = await lines_of(client, done.output_file_id)
    assert set(output) == set(prompts)
    # Each line is what the same request gets interactively (the simulator is deterministic).
    for cid in ("req-0", "req-17", "req-29"):
        direct = await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": prompts[cid]}], max_tokens=5)
        response = output[cid]["response"]
        assert response["status_code"] == 200 and output[cid]["error"] is None
        assert response["body"]["object"] == "chat.completion"
        assert response["body"]["choices"][0]["message"]["content"] == direct.choices[0].message.content
        assert response["body"]["usage"]["completion_tokens"] == 5
    # Charged what was used, the rest released once.
    await assert_settled_once(stack, user, batch.id, 30)
    spent = before - (await account(stack, user))[0]
    assert 0 < spent < (await account(stack, user))[0]
    listed = [b.id async for b in client.batches.list(limit=5)]
    assert batch.id in listed
    output_file = await client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"


async def test_embedding_batch_matches_the_simulator(stack: Stack, user: User, tmp_path: Path) -> None:
    client = sdk(stack, user)
    texts = {f"e{i}": f"embed this text {i}" for i in range(5)}
    lines = [{"custom_id": cid, "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "t-embed", "input": text, "dimensions": 32,
                       **({"encoding_format": "base64"} if cid == "e0" else {})}}
             for cid, text in texts.items()]
    done = await wait_batch(client, (await submit(client, jsonl(tmp_path, lines), "/v1/embeddings")).id)
    assert done.status == "completed", done
    output = await lines_of(client, done.output_file_id)
    for cid, text in texts.items():
        vector = output[cid]["response"]["body"]["data"][0]["embedding"]
        if cid == "e0":
            raw = base64.b64decode(vector)
            vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        assert vector == pytest.approx(embed(text, 32), abs=1e-6)


async def test_bad_lines_fail_the_batch_naming_each_line_and_reserve_nothing(
        stack: Stack, user: User, tmp_path: Path) -> None:
    client = sdk(stack, user)
    path = jsonl(tmp_path, [
        chat_line("a", "fine"),
        '{"custom_id": "b", "method": "POST", "url": ',                                   # 2: not JSON
        {**chat_line("c", "x"), "url": "/v1/embeddings"},                                 # 3: wrong url
        chat_line("d", "x", model="gpt-17"),                                              # 4: not routed
        chat_line("a", "again"),                                                          # 5: duplicate
        {"custom_id": "f", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "sim-small"}},  # 6
        {**chat_line("g", "x"), "method": "GET"},                                         # 7
    ])
    before = await account(stack, user)
    batch = await submit(client, path)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None
    found = {(e.line, e.code) for e in batch.errors.data}
    assert found == {(2, "invalid_json_line"), (3, "mismatched_url"), (4, "model_not_found"),
                     (5, "duplicate_custom_id"), (6, "invalid_request"), (7, "invalid_method")}
    assert await account(stack, user) == before
    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"]) as conn:
        jobs = await (await conn.execute("SELECT count(*) FROM jobs WHERE batch_id = %s", (batch.id,))).fetchone()
    assert jobs is not None and jobs[0] == 0


def test_too_many_lines_and_an_empty_file_fail_validation(stack: Stack) -> None:
    catalog = load_catalog(stack.settings)

    def validate(data: bytes) -> Validation:
        check = Validation(endpoint=ENDPOINTS["/v1/chat/completions"], catalog=catalog, batch_id="batch_x",
                           owner_id=uuid.uuid4(), max_lines=3, max_chars=1000, max_attempts=2)
        check.feed(data)
        check.finish()
        return check

    four = "".join(json.dumps(chat_line(f"l{i}", "hi")) + "\n" for i in range(4)).encode()
    assert [(e.code, e.line) for e in validate(four).errors] == [("too_many_lines", 4)]
    assert [e.code for e in validate(b"\n\n").errors] == ["empty_file"]
    three = validate(b"".join(four.splitlines(keepends=True)[:3]))
    assert not three.errors and len(three.jobs) == 3 and three.cost > 0
    long = json.dumps(chat_line("big", "x" * 2000)).encode()
    assert [e.code for e in validate(long).errors] == ["prompt_too_large"]
    # NUL cannot be stored by PostgreSQL: refused as a bad line, not a failed COPY; an escaped
    # backslash followed by "u0000" is ordinary text.
    nul = json.dumps(chat_line("n", "a\x00b")).encode()
    assert [(e.code, e.line) for e in validate(nul).errors] == [("invalid_request", 1)]
    assert not validate(json.dumps(chat_line("t", "a\\u0000b")).encode()).errors
    # A byte order mark, CRLF endings and a line split across chunks are fine.
    crlf = ("\ufeff" + json.dumps(chat_line("a", "hi")) + "\r\n" + json.dumps(chat_line("b", "yo")) + "\r\n").encode()
    check = Validation(endpoint=ENDPOINTS["/v1/chat/completions"], catalog=catalog, batch_id="batch_x",
                       owner_id=uuid.uuid4(), max_lines=3, max_chars=1000, max_attempts=2)
    for i in range(0, len(crlf), 7):
        check.feed(crlf[i:i + 7])
    check.finish()
    assert not check.errors and len(check.jobs) == 2
    # A line longer than the limit is refused without being held whole.
    check = Validation(endpoint=ENDPOINTS["/v1/chat/completions"], catalog=catalog, batch_id="batch_x",
                       owner_id=uuid.uuid4(), max_lines=3, max_chars=10**9, max_attempts=2, max_line_bytes=1000)
    huge = json.dumps(chat_line("h", "x" * 5000)).encode()
    for i in range(0, len(huge), 100):
        check.feed(huge[i:i + 100])
    check.feed(b"\n" + four.splitlines(keepends=True)[0])
    check.finish()
    assert [(e.code, e.line) for e in check.errors] == [("line_too_long", 1)] and check.lines == 2


async def test_an_unaffordable_batch_is_402_with_nothing_reserved(stack: Stack, tmp_path: Path) -> None:
    poor = await make_user(stack.env["DATABASE_URL"], credits=10)
    client = sdk(stack, poor)
    with pytest.raises(openai.APIStatusError) as short:
        await submit(client, jsonl(tmp_path, [chat_line(f"r{i}", "hello", max_tokens=500) for i in range(20)]))
    assert short.value.status_code == 402 and short.value.code == "insufficient_credits"
    assert await account(stack, poor) == (10, 0)
    [batch] = [b async for b in client.batches.list()]
    assert batch.status == "failed" and batch.errors and batch.errors.data[0].code == "insufficient_credits"


async def test_cancel_mid_batch_ends_every_line_exactly_once(stack: Stack, user: User, tmp_path: Path,
                                                             redis_client: redis.Redis) -> None:
    client = sdk(stack, user)
    path = jsonl(tmp_path, [chat_line(f"c{i}", f"[[sim: ttft_ms=250]] slow line {i}") for i in range(40)])
    batch = await submit(client, path)
    await asyncio.sleep(1.0)
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = await wait_batch(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    counts = done.request_counts
    assert counts.total == 40 and counts.completed + counts.failed == 40
    assert 0 < counts.completed < 40, counts
    output, errors = await lines_of(client, done.output_file_id), await lines_of(client, done.error_file_id)
    assert not set(output) & set(errors) and len(output) + len(errors) == 40
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
    # Lines that never started had their messages withdrawn: the bulk pool will not even fetch them.
    never_ran = [uuid.UUID(e["id"].removeprefix("batch_req_")) for e in errors.values()]
    assert not any(redis_client.hexists("switchyard:chat.bulk.msgs", str(job_id)) for job_id in never_ran)
    await assert_settled_once(stack, user, batch.id, 40)
    with pytest.raises(openai.ConflictError) as again:
        await client.batches.cancel(batch.id)
    assert again.value.code == "batch_finished"


async def test_expiry_cancels_what_has_not_run_and_finalizes_the_rest(
        stack: Stack, user: User, tmp_path: Path) -> None:
    client = sdk(stack, user)
    path = jsonl(tmp_path, [chat_line(f"x{i}", f"[[sim: ttft_ms=400]] expiring {i}") for i in range(40)])
    batch = await submit(client, path, window="2s")
    done = await wait_batch(client, batch.id, timeout=30)
    assert done.status == "expired" and done.expired_at is not None
    output, errors = await lines_of(client, done.output_file_id), await lines_of(client, done.error_file_id)
    assert len(output) + len(errors) == 40 and output and errors
    assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"}
    await assert_settled_once(stack, user, batch.id, 40)


async def test_a_killed_bulk_worker_loses_and_doubles_no_line(stack: Stack, user: User, tmp_path: Path) -> None:
    client = sdk(stack, user)
    path = jsonl(tmp_path, [chat_line(f"k{i}", f"[[sim: ttft_ms=200]] survive {i}") for i in range(40)])
    batch = await submit(client, path)
    await asyncio.sleep(0.8)
    stack.bulk_worker.kill()  # SIGKILL: in-flight lines are abandoned mid-call
    stack.bulk_worker = start_worker(stack.env, stack.log_dir, name="bulk-worker", queues=["chat.bulk"])
    done = await wait_batch(client, batch.id, timeout=90)
    assert done.status == "completed" and done.request_counts.completed == 40, done
    assert len(await lines_of(client, done.output_file_id)) == 40
    await assert_settled_once(stack, user, batch.id, 40)


async def test_a_fan_out_that_stopped_half_way_is_resumed(stack: Stack, user: User, tmp_path: Path,
                                                          redis_client: redis.Redis) -> None:
    client = sdk(stack, user)
    stack.bulk_worker.stop()
    try:
        batch = await submit(client, jsonl(tmp_path, [chat_line(f"s{i}", f"resume {i}") for i in range(20)]))
        # As if the API died after committing the lines but before its messages reached Redis.
        redis_client.delete("switchyard:chat.bulk", "switchyard:chat.bulk.msgs")
        async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
            await conn.execute("UPDATE batches SET sent_at = NULL, lease_until = now() - interval '1 s' "
                               "WHERE id = %s", (batch.id,))
    finally:
        stack.bulk_worker = start_worker(stack.env, stack.log_dir, name="bulk-worker", queues=["chat.bulk"])
    done = await wait_batch(client, batch.id, timeout=60)
    assert done.status == "completed" and done.request_counts.completed == 20, done
    await assert_settled_once(stack, user, batch.id, 20)


async def test_a_validation_interrupted_by_an_api_crash_is_resumed(stack: Stack, user: User,
                                                                   tmp_path: Path) -> None:
    client = sdk(stack, user)
    uploaded = await client.files.create(file=jsonl(tmp_path, [chat_line(f"v{i}", "hi") for i in range(10)]),
                                         purpose="batch")
    batch_id = f"batch_{uuid.uuid4().hex}"
    async with await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        # The row an API process commits before it validates; its lease ran out (the process died).
        await conn.execute(
            """INSERT INTO batches (id, owner_id, endpoint, input_file_id, completion_window, expires_at,
                                    lease_until)
               VALUES (%s, %s, '/v1/chat/completions', %s, '24h', now() + interval '1 day',
                       now() - interval '1 s')""", (batch_id, user.id, uploaded.id))
    done = await wait_batch(client, batch_id, timeout=60)
    assert done.status == "completed" and done.request_counts.completed == 10, done
    await assert_settled_once(stack, user, batch_id, 10)


async def test_interactive_jobs_start_at_once_while_a_batch_drains(
        stack: Stack, user: User, tmp_path: Path, client: httpx.AsyncClient) -> None:
    batch_client = sdk(stack, user)
    path = jsonl(tmp_path, [chat_line(f"d{i}", f"[[sim: ttft_ms=300]] drain {i}") for i in range(60)])
    batch = await submit(batch_client, path)
    await asyncio.sleep(0.5)
    waits = []
    for i in range(5):
        job = (await client.post("/v1/jobs", json=chat_job(f"interactive {i}"))).json()
        started = time.monotonic()
        while (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "queued":
            await asyncio.sleep(0.01)
        waits.append(time.monotonic() - started)
    assert (await batch_client.batches.retrieve(batch.id)).status == "in_progress"  # still draining
    assert max(waits) < 1.0, waits
    await batch_client.batches.cancel(batch.id)
    await wait_batch(batch_client, batch.id)


async def test_progress_events_and_a_signed_completion_webhook(
        stack: Stack, user: User, tmp_path: Path, client: httpx.AsyncClient, receive: Any) -> None:  # noqa: F811
    receiver = receive("200")
    sdk_client = sdk(stack, user)
    path = jsonl(tmp_path, [chat_line(f"w{i}", f"[[sim: ttft_ms=50]] webhook {i}") for i in range(12)])
    batch = await submit(sdk_client, path, extra_body={"callback_url": receiver.url()})
    events = await sse_events(client, f"/v1/batches/{batch.id}/events")
    assert all(e["type"] == "batch.progress" for e in events)
    assert events[-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    [got] = await _received(receiver)
    secret = (await client.get("/v1/webhooks/secret")).json()["secret"]
    event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "batch.completed" and event["data"]["id"] == batch.id
    assert event["data"]["output_file_id"] and event["data"]["request_counts"]["completed"] == 12


async def test_batches_are_private_idempotent_and_checked(stack: Stack, user: User, other_user: User,
                                                          tmp_path: Path) -> None:
    client = sdk(stack, user)
    uploaded = await client.files.create(file=jsonl(tmp_path, [chat_line("p", "private")]), purpose="batch")
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", extra_headers=key)
    again = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", extra_headers=key)
    assert again.id == first.id
    stranger = sdk(stack, other_user)
    with pytest.raises(openai.NotFoundError) as hidden:
        await stranger.batches.retrieve(first.id)
    assert hidden.value.code == "batch_not_found"
    with pytest.raises(openai.NotFoundError):
        await stranger.batches.cancel(first.id)
    with pytest.raises(openai.NotFoundError) as no_file:  # another user's file cannot feed a batch
        await stranger.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
    assert no_file.value.code == "file_not_found"
    with pytest.raises(openai.BadRequestError) as window:
        await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="forever")  # type: ignore[arg-type]
    assert window.value.code == "invalid_batch"
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="24h", extra_body={"callback_url": "http://127.0.0.1:9/"})
    assert refused.value.code == "webhook_target_refused"
    await wait_batch(client, first.id)


async def test_a_free_batch_needs_no_credits_and_lines_outlive_the_job_expiry(
        stack: Stack, tmp_path: Path) -> None:
    broke = await make_user(stack.env["DATABASE_URL"], credits=0)
    client = sdk(stack, broke)
    lines = [{"custom_id": f"f{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "t-fallback", "messages": [{"role": "user", "content": "free"}], "max_tokens": 3}}
             for i in range(3)]
    done = await wait_batch(client, (await submit(client, jsonl(tmp_path, lines))).id)
    assert done.status == "completed" and done.request_counts.completed == 3, done
    # The job-expiry sweep leaves batch lines to their batch's completion window (which may exceed it).
    from jobs import store
    from jobs.db import open_pool

    pool = await open_pool(stack.env["DATABASE_URL"], min_size=1, max_size=1)
    try:
        async with pool.connection() as conn:
            await conn.execute("UPDATE jobs SET status = 'queued', created_at = now() - interval '30 days' "
                               "WHERE batch_id = %s", (done.id,))
        stale = await store.stale_jobs(pool, 86_400)
        async with pool.connection() as conn:
            await conn.execute("UPDATE jobs SET status = 'succeeded' WHERE batch_id = %s", (done.id,))
    finally:
        await pool.close()
    assert stale == []


async def test_lines_stranded_in_redis_are_sent_again_when_the_batch_stalls(
        stack: Stack, user: User, tmp_path: Path, redis_client: redis.Redis) -> None:
    client = sdk(stack, user)
    stack.bulk_worker.stop()
    try:
        batch = await submit(client, jsonl(tmp_path, [chat_line(f"t{i}", f"stranded {i}") for i in range(10)]))
        # The messages' bodies stay but no list holds their ids: what a consumer that dropped its
        # prefetch on a Redis disconnect leaves behind (nothing would ever fetch them).
        redis_client.delete("switchyard:chat.bulk")
    finally:
        stack.bulk_worker = start_worker(stack.env, stack.log_dir, name="bulk-worker", queues=["chat.bulk"])
    done = await wait_batch(client, batch.id, timeout=60)
    assert done.status == "completed" and done.request_counts.completed == 10, done
    assert "batch stalled with its lane empty" in stack.maintenance.log()
    await assert_settled_once(stack, user, batch.id, 10)
