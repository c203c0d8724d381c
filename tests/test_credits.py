"""Credits: reserved at submission, settled once with the result, never negative."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from jobs.broker import make_broker
from jobs.enqueue import send_job
from scripts.embedded import free_port
from scripts.procs import Process, start_api
from tests.conftest import Stack, User, chat_job, make_user, nodelay_transport, wait_for_status


def ledger(database_url: str, user: User) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT kind, amount, job_id::text FROM credit_ledger WHERE user_id = %s ORDER BY id", (user.id,)
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def account(database_url: str, user: User) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT balance, reserved FROM credit_accounts WHERE user_id = %s", (user.id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def assert_ledger_consistent(database_url: str, user: User) -> None:
    """The account equals the ledger's sums, and every finished job's reservation is fully accounted for."""
    entries = ledger(database_url, user)
    total = {kind: sum(a for k, a, _ in entries if k == kind)
             for kind in ("grant", "topup", "refund", "reserve", "settle", "release")}
    balance, reserved = account(database_url, user)
    assert balance == total["grant"] + total["topup"] + total["refund"] + total["release"] - total["reserve"]
    assert reserved == total["reserve"] - total["release"] - total["settle"]
    by_job: dict[str, dict[str, list[int]]] = {}
    for kind, amount, job_id in entries:
        if job_id:
            by_job.setdefault(job_id, {}).setdefault(kind, []).append(amount)
    for job_id, kinds in by_job.items():
        assert all(len(v) == 1 for v in kinds.values()), (job_id, kinds)  # one row per (job, kind)
        if "settle" in kinds:
            assert kinds["reserve"][0] == kinds["settle"][0] + kinds["release"][0]


async def test_success_charges_actual_usage_and_releases_the_rest(
    client: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    before, _ = account(stack.env["DATABASE_URL"], user)
    job = (await client.post("/v1/jobs", json=chat_job("price this please", max_tokens=100))).json()
    done = await wait_for_status(client, job["id"])
    usage = done["usage"]
    # sim-small: 100 credits per M input tokens, 200 per M output, rounded up.
    charged = -(-(usage["prompt_tokens"] * 100 + usage["completion_tokens"] * 200) // 1_000_000)
    entries = [(k, a) for k, a, j in ledger(stack.env["DATABASE_URL"], user) if j == job["id"]]
    kinds = dict(entries)
    assert set(kinds) == {"reserve", "settle", "release"}
    assert kinds["settle"] == charged and kinds["reserve"] == charged + kinds["release"]
    assert account(stack.env["DATABASE_URL"], user) == (before - charged, 0)
    credits = (await client.get("/v1/credits")).json()
    assert credits == {"balance": before - charged, "reserved": 0, "object": "credit_balance"}
    txs = (await client.get("/v1/credits/transactions", params={"limit": 3})).json()
    assert [t["kind"] for t in txs["data"]] == ["release", "settle", "reserve"]
    usage_report = (await client.get("/v1/usage")).json()
    assert usage_report["data"][0]["model"] == "sim-small" and usage_report["total_credits"] == charged
    assert_ledger_consistent(stack.env["DATABASE_URL"], user)


async def test_short_balance_is_402_and_writes_nothing(stack: Stack) -> None:
    poor = await make_user(stack.env["DATABASE_URL"], credits=1)
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {poor.key}"}) as c:
        resp = await c.post("/v1/jobs", json=chat_job("expensive", max_tokens=30_000))
        assert resp.status_code == 402
        problem = resp.json()
        assert problem["code"] == "insufficient_credits" and problem["balance"] == 1 and problem["required"] > 1
        assert (await c.get("/v1/jobs")).json()["data"] == []
    assert [k for k, _, _ in ledger(stack.env["DATABASE_URL"], poor)] == ["grant"]


async def test_failed_job_releases_everything(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    before, _ = account(stack.env["DATABASE_URL"], user)
    job = (await client.post("/v1/jobs", json=chat_job("[[sim: fault=401]] nope"))).json()
    assert (await wait_for_status(client, job["id"]))["status"] == "failed"
    assert account(stack.env["DATABASE_URL"], user) == (before, 0)
    kinds = {k: a for k, a, j in ledger(stack.env["DATABASE_URL"], user) if j == job["id"]}
    assert kinds["settle"] == 0 and kinds["release"] == kinds["reserve"] > 0


async def test_cancel_releases_the_reservation(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    before, _ = account(stack.env["DATABASE_URL"], user)
    job = (await client.post("/v1/jobs", json=chat_job("[[sim: ttft_ms=3000]] slow", stream=True))).json()
    await asyncio.sleep(0.3)
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
    assert account(stack.env["DATABASE_URL"], user) == (before, 0)
    assert_ledger_consistent(stack.env["DATABASE_URL"], user)


async def test_thousand_concurrent_one_credit_jobs_against_a_hundred_credits(stack: Stack) -> None:
    db = stack.env["DATABASE_URL"]
    user = await make_user(db, credits=100)
    body = chat_job("one", model="t-credit", max_tokens=1)
    lowest = [100]
    stop = asyncio.Event()

    async def watch_balance() -> None:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            while not stop.is_set():
                cur = await conn.execute("SELECT balance FROM credit_accounts WHERE user_id = %s", (user.id,))
                row = await cur.fetchone()
                assert row is not None
                lowest[0] = min(lowest[0], row[0])
                await asyncio.sleep(0.005)

    transport = nodelay_transport(limits=httpx.Limits(max_connections=200, max_keepalive_connections=200))
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {user.key}"},
                                 timeout=120, transport=transport) as c:
        watcher = asyncio.create_task(watch_balance())
        started = time.monotonic()
        responses = await asyncio.gather(*[c.post("/v1/jobs", json=body) for _ in range(1000)])
        elapsed = time.monotonic() - started
        statuses = [r.status_code for r in responses]
        accepted = [r.json()["id"] for r in responses if r.status_code == 202]
        for job_id in accepted:
            assert (await wait_for_status(c, job_id, timeout=60))["status"] == "succeeded"
        stop.set()
        await watcher
    print(f"\n1000 concurrent submissions in {elapsed:.1f}s: {statuses.count(202)} accepted, "
          f"{statuses.count(402)} refused (402); lowest balance seen {lowest[0]}")
    assert statuses.count(202) == 100 and statuses.count(402) == 900
    assert lowest[0] >= 0
    assert account(db, user) == (0, 0)
    entries = ledger(db, user)
    assert sum(1 for k, _, _ in entries if k == "reserve") == 100
    assert sum(a for k, a, _ in entries if k == "settle") == 100
    assert_ledger_consistent(db, user)


async def test_one_busy_user_and_a_short_one_submitting_together(stack: Stack) -> None:
    """Group commit (jobs/submitter.py): jobs of two users share transactions; the short user's extra jobs are
    refused one by one, each 402 naming a balance below its price, and nothing of the rich user's is refused."""
    db = stack.env["DATABASE_URL"]
    rich, short = await make_user(db, credits=100_000), await make_user(db, credits=150)
    prices = [1, 2, 3]
    def client_of(who: User) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {who.key}"}, timeout=120,
                                 transport=nodelay_transport(limits=httpx.Limits(max_connections=50)))

    async with client_of(rich) as rich_client, client_of(short) as short_client:
        async def send(i: int) -> httpx.Response:
            return await (rich_client if i % 2 else short_client).post(
                "/v1/jobs", json=chat_job(f"n{i}", model="t-credit", max_tokens=prices[i % 3]))

        started = time.monotonic()
        responses = await asyncio.gather(*[send(i) for i in range(400)])
        elapsed = time.monotonic() - started
        rich_responses = [r for i, r in enumerate(responses) if i % 2]
        short_responses = [(i, r) for i, r in enumerate(responses) if not i % 2]
        assert all(r.status_code == 202 for r in rich_responses)
        refused = [(i, r) for i, r in short_responses if r.status_code == 402]
        accepted = [(i, r) for i, r in short_responses if r.status_code == 202]
        assert refused and accepted and len(refused) + len(accepted) == 200
        for i, r in refused:
            problem = r.json()
            assert problem["code"] == "insufficient_credits" and problem["balance"] < prices[i % 3], problem
        for c, job_responses in ((rich_client, rich_responses), (short_client, [r for _, r in accepted])):
            for r in job_responses:
                assert (await wait_for_status(c, r.json()["id"], timeout=60))["status"] == "succeeded"
    print(f"\n400 submissions of two users in {elapsed:.2f}s: {len(accepted)} of the short user's accepted")
    assert sum(prices[i % 3] for i, _ in accepted) <= 150 + sum(  # what settles gave back while others were sent
        a for k, a, _ in ledger(db, short) if k == "release")
    for who in (rich, short):
        assert account(db, who)[1] == 0
        assert_ledger_consistent(db, who)


async def test_retried_and_redelivered_job_is_settled_once(
    client: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    job = (await client.post("/v1/jobs", json=chat_job("[[sim: fault=500; times=1; key=settle1]] once"))).json()
    done = await wait_for_status(client, job["id"])
    assert done["status"] == "succeeded" and len(done["attempts"]) == 2  # retried
    broker = make_broker(stack.settings, middleware=[])
    try:
        for _ in range(3):  # redeliveries of a finished job
            await asyncio.to_thread(send_job, broker, done["id"], "chat")
    finally:
        broker.close()
    await asyncio.sleep(1.0)
    kinds = [k for k, _, j in ledger(stack.env["DATABASE_URL"], user) if j == job["id"]]
    assert sorted(kinds) == ["release", "reserve", "settle"]
    assert_ledger_consistent(stack.env["DATABASE_URL"], user)


async def wait_in_db(database_url: str, job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,))
            row = await cur.fetchone()
            if row and row[0] in ("succeeded", "failed", "cancelled"):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def limited_apis(stack: Stack) -> Iterator[list[str]]:
    """Two more API processes with small per-key limits (10 requests/minute, 2 concurrent jobs)."""
    env = {**stack.env, "SWITCHYARD_RATE_LIMIT_RPM_FREE": "10", "SWITCHYARD_MAX_CONCURRENT_JOBS_FREE": "2"}
    procs: list[Process] = []
    try:
        for name in ("api-limited-1", "api-limited-2"):
            port = free_port()
            procs.append(start_api(env, port, stack.log_dir, name=name))
        yield [f"http://127.0.0.1:{p.env_port}" for p in procs]
    finally:
        for p in procs:
            p.stop()


async def test_rate_limit_holds_across_two_api_processes(stack: Stack, user: User, limited_apis: list[str]) -> None:
    if time.time() % 60 > 50:
        await asyncio.sleep(61 - time.time() % 60)
    headers = {"Authorization": f"Bearer {user.key}"}
    results: list[httpx.Response] = []
    async with httpx.AsyncClient(headers=headers) as c:
        for i in range(16):
            results.append(await c.get(f"{limited_apis[i % 2]}/v1/jobs"))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 10 and statuses.count(429) == 6
    assert results[0].headers["ratelimit-limit"] == "10"
    assert [int(r.headers["ratelimit-remaining"]) for r in results[:10]] == list(range(9, -1, -1))
    refused = results[statuses.index(429)]
    assert refused.json()["code"] == "rate_limited" and int(refused.headers["retry-after"]) > 0


async def test_concurrent_job_limit_per_user(stack: Stack, user: User, limited_apis: list[str]) -> None:
    headers = {"Authorization": f"Bearer {user.key}"}
    slow = chat_job("[[sim: ttft_ms=1500]] slow")
    async with httpx.AsyncClient(headers=headers) as c:
        # Alternate processes: the limit is shared, not per process.
        first = [(await c.post(f"{limited_apis[i]}/v1/jobs", json=slow)).json() for i in range(2)]
        third = await c.post(f"{limited_apis[0]}/v1/jobs", json=slow)
        assert third.status_code == 429 and third.json()["code"] == "too_many_concurrent_jobs"
        for job in first:
            # Polled in the database: API calls would spend from this key's 10-a-minute budget.
            await wait_in_db(stack.env["DATABASE_URL"], job["id"])
        fourth: Any = await c.post(f"{limited_apis[1]}/v1/jobs", json=slow)
        assert fourth.status_code == 202, fourth.text
