"""Operators: pools and heartbeats, held dead letters (requeue, purge), circuits, every admin route, metrics, readiness.

The dead-letter test replaces the session's interactive pool and maintenance
loop with ones holding dead letters for ten minutes, breaks the pool (its
chaos marker makes the job fail like an outage), then "deploys the fix" (a
pool without the marker) and requeues, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs import metrics
from scripts.procs import Process, start_maintenance, start_worker
from tests.conftest import ERROR_MARKER, INTERACTIVE_LANES, Stack, User, chat_job, make_user, wait_for_status
from tests.test_admin import job_ledger

ROOT = Path(__file__).resolve().parent.parent




async def poll(fetch: Any, check: Any, timeout: float, what: str) -> Any:
    """`await fetch()` until `check(value)`; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value}"
        await asyncio.sleep(0.3)


# --- every admin route is admin-only -------------------------------------------------------------

#: A valid request for each admin route (so only the role can refuse it); a new route must be added here.
ADMIN_CALLS: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("POST", "/v1/admin/credits/grants"): ("/v1/admin/credits/grants",
                                           {"user_id": str(uuid.uuid4()), "credits": 5, "reason": "self-service"}),
    ("GET", "/v1/admin/queues"): ("/v1/admin/queues", None),
    ("GET", "/v1/admin/workers"): ("/v1/admin/workers", None),
    ("POST", "/v1/admin/queues/{queue}/requeue-dead"): ("/v1/admin/queues/chat/requeue-dead", None),
    ("GET", "/v1/admin/queues/{queue}/dead-letters"): ("/v1/admin/queues/chat/dead-letters", None),
    ("POST", "/v1/admin/queues/{queue}/dead-letters/requeue"): ("/v1/admin/queues/chat/dead-letters/requeue", {}),
    ("POST", "/v1/admin/queues/{queue}/dead-letters/purge"): ("/v1/admin/queues/chat/dead-letters/purge", {}),
    ("GET", "/v1/admin/jobs"): ("/v1/admin/jobs", None),
    ("GET", "/v1/admin/jobs/{job_id}"): (f"/v1/admin/jobs/{uuid.uuid4()}", None),
    ("GET", "/v1/admin/jobs/{job_id}/events"): (f"/v1/admin/jobs/{uuid.uuid4()}/events", None),
    ("GET", "/v1/admin/providers"): ("/v1/admin/providers", None),
    ("POST", "/v1/admin/providers/{target}/circuit"): ("/v1/admin/providers/sim:sim-small/circuit",
                                                         {"state": "open"}),
    ("GET", "/v1/admin/users"): ("/v1/admin/users", None),
    ("GET", "/v1/admin/audit"): ("/v1/admin/audit", None),
}


async def test_every_admin_route_is_403_for_a_user_and_401_anonymous(
    client: httpx.AsyncClient, stack: Stack, admin_client: httpx.AsyncClient
) -> None:
    schema = (await client.get("/docs/openapi.json")).json()
    routes = {(method.upper(), path) for path, item in schema["paths"].items() if path.startswith("/v1/admin")
              for method in item if method in {"get", "post", "put", "patch", "delete"}}
    assert routes == set(ADMIN_CALLS), routes ^ set(ADMIN_CALLS)
    async with httpx.AsyncClient(base_url=stack.api_url) as anon:
        for (method, _), (url, body) in ADMIN_CALLS.items():
            resp = await client.request(method, url, json=body)
            assert resp.status_code == 403 and resp.json()["code"] == "forbidden", (url, resp.text)
            assert (await anon.request(method, url, json=body)).status_code == 401, url
    # Nothing happened: the circuit the user tried to force open is untouched.
    providers = (await admin_client.get("/v1/admin/providers")).json()["data"]
    assert next(p for p in providers if p["target"] == "sim:sim-small")["state"] == "closed"


# --- pools and heartbeats -------------------------------------------------------------------------

async def test_two_pools_on_two_queues_then_one_is_killed_and_goes_stale(
    admin_client: httpx.AsyncClient, stack: Stack
) -> None:
    timeout_ms = stack.settings.heartbeat_timeout_ms
    hooks = start_worker(stack.env, stack.log_dir, name="pool-hooks", queues=["webhooks"], pool="hooks", threads=2)
    money = start_worker(stack.env, stack.log_dir, name="pool-money", queues=["billing"], pool="money",
                         processes=2, threads=3)
    try:
        async def listing() -> dict[str, Any]:
            return (await admin_client.get("/v1/admin/workers")).json()

        def pools_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
            return {p["pool"]: p for p in body["pools"]}

        body = await poll(listing, lambda b: pools_of(b).get("money", {}).get("processes") == 2
                          and pools_of(b).get("hooks", {}).get("processes") == 1, 20, "both pools")
        pools = pools_of(body)
        assert pools["hooks"]["queues"] == ["webhooks"] and pools["hooks"]["concurrency"] == 2
        assert pools["money"]["queues"] == ["billing"] and pools["money"]["concurrency"] == 6
        members = [w["worker"] for w in body["data"] if w["worker"]["pool"] == "money"]
        assert len({w["pid"] for w in members}) == 2 and all(w["version"] for w in members)
        # Only consumers beat: every listed process belongs to a pool and consumes queues.
        assert all(w["worker"]["queues"] for w in body["data"])
        assert {p["pool"] for p in body["pools"]} == {w["worker"]["pool"] for w in body["data"]} >= {"hooks", "money"}

        killed_at = time.monotonic()
        money.kill()  # SIGKILL: no goodbye, the records go stale
        body = await poll(listing, lambda b: pools_of(b)["money"]["processes"] == 0, timeout_ms / 1000 + 5,
                          "the killed pool to go stale")
        assert time.monotonic() - killed_at <= timeout_ms / 1000 + 5
        assert pools_of(body)["money"]["stale"] == 2 and pools_of(body)["hooks"]["processes"] == 1
        stale = [w for w in body["data"] if w["worker"]["pool"] == "money"]
        assert stale and all(not w["alive"] and w["age_ms"] > timeout_ms for w in stale)

        hooks.stop()  # a clean exit removes its record at once
        body = await listing()
        assert "hooks" not in pools_of(body)
    finally:
        money.kill()
        hooks.stop()


# --- dead letters: held, requeued after the fix, purged -----------------------------------------

@pytest.fixture
def holding_stack(stack: Stack) -> Iterator[dict[str, str]]:
    """The session's interactive pool and maintenance replaced by ones that hold dead letters 10 minutes."""
    env = {**stack.env, "SWITCHYARD_DEAD_LETTER_HOLD_SECONDS": "600"}
    stack.worker.stop()
    stack.maintenance.stop()
    procs: list[Process] = [start_maintenance(env, stack.log_dir)]
    try:
        yield env
    finally:
        for proc in procs:
            proc.stop()
        stack.maintenance = start_maintenance(stack.env, stack.log_dir)
        stack.worker = start_worker(stack.env, stack.log_dir, queues=INTERACTIVE_LANES, pool="interactive")


async def test_dead_letters_are_held_then_requeued_after_the_fix_or_purged(
    admin_client: httpx.AsyncClient, client: httpx.AsyncClient, stack: Stack, holding_stack: dict[str, str]
) -> None:
    broken = start_worker(holding_stack, stack.log_dir, name="worker-broken", queues=INTERACTIVE_LANES,
                          pool="interactive")
    try:
        # Two jobs that fail like an outage on every delivery: dead-lettered after one retry.
        jobs = [(await client.post("/v1/jobs", json=chat_job(f"{ERROR_MARKER} job {i}"))).json() for i in range(2)]

        async def letters() -> list[dict[str, Any]]:
            resp = await admin_client.get("/v1/admin/queues/chat/dead-letters")
            assert resp.status_code == 200, resp.text
            return [d for d in resp.json()["data"] if d["job_id"] in {j["id"] for j in jobs}]

        held = await poll(letters, lambda ds: len(ds) == 2, 30, "two dead letters")
        for letter in held:
            assert letter["kind"] == "chat.completion" and letter["status"] == "queued"
            assert "chaos marker" in letter["error"] and letter["retries"] >= 1
        # Held, not lost: the reconciler (2 s) does not re-send them, and nobody claims them again.
        claims = {j["id"]: (await client.get(f"/v1/jobs/{j['id']}")).json()["claims"] for j in jobs}
        await asyncio.sleep(3)
        for job in jobs:
            again = (await client.get(f"/v1/jobs/{job['id']}")).json()
            assert again["status"] == "queued" and again["claims"] == claims[job["id"]], again
        queue = next(q for q in (await admin_client.get("/v1/admin/queues")).json()["data"] if q["name"] == "chat")
        assert queue["dead_letters"] >= 2
    finally:
        broken.stop()

    fixed = start_worker({**holding_stack, "SWITCHYARD_CHAOS_ERROR_MARKER": ""}, stack.log_dir,
                         name="worker-fixed", queues=INTERACTIVE_LANES, pool="interactive")
    try:
        first, second = jobs
        # A retried message has a Redis id of its own (Dramatiq's), so the list is how one finds it.
        by_job = {d["job_id"]: d["message_id"] for d in held}
        one = await admin_client.post("/v1/admin/queues/chat/dead-letters/requeue",
                                      json={"message_ids": [by_job[first["id"]]]})
        assert one.status_code == 200 and one.json()["requeued"] == 1, one.text
        done = await wait_for_status(client, first["id"], timeout=30)
        assert done["status"] == "succeeded", done
        kinds = [k for k, _ in job_ledger(stack, first["id"])]
        assert kinds.count("reserve") == 1 and kinds.count("settle") == 1 and kinds.count("release") <= 1
        again = await admin_client.post("/v1/admin/queues/chat/dead-letters/requeue",
                                        json={"message_ids": [by_job[first["id"]]]})
        assert again.status_code == 404 and again.json()["code"] == "dead_letter_not_found"

        purged = await admin_client.post("/v1/admin/queues/chat/dead-letters/purge",
                                         json={"message_ids": [by_job[second["id"]]]})
        assert purged.status_code == 200 and purged.json() == {"queue": "chat", "purged": 1, "jobs_failed": 1}
        failed = (await client.get(f"/v1/jobs/{second['id']}")).json()
        assert failed["status"] == "failed" and failed["error"]["code"] == "delivery_failed"
        assert "purged by an operator" in failed["error"]["message"]
        amounts = dict(job_ledger(stack, second["id"]))
        assert amounts["release"] == amounts["reserve"] and amounts.get("settle", 0) == 0
        assert await letters() == []

        audit = (await admin_client.get("/v1/admin/audit")).json()["data"]
        actions = [(a["action"], a["target"]) for a in audit[:5]]
        assert ("admin.purge", "chat") in actions and ("admin.requeue", "chat") in actions
    finally:
        fixed.stop()


# --- circuits ---------------------------------------------------------------------------------------

async def test_forcing_a_circuit_open_moves_traffic_to_the_fallback_and_auto_hands_it_back(
    admin_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    target = "sim:cb-primary"
    forced = await admin_client.post(f"/v1/admin/providers/{target}/circuit",
                                     json={"state": "open", "reason": "provider maintenance"})
    assert forced.status_code == 200 and forced.json()["state"] == "forced_open", forced.text
    try:
        job = (await client.post("/v1/jobs", json=chat_job("during maintenance", model="t-circuit"))).json()
        done = await wait_for_status(client, job["id"])
        assert done["status"] == "succeeded"
        assert [a["model"] for a in done["attempts"]] == ["cb-backup"], done["attempts"]  # primary skipped
    finally:
        back = await admin_client.post(f"/v1/admin/providers/{target}/circuit", json={"state": "auto"})
        assert back.status_code == 200 and back.json()["state"] == "closed"
    job = (await client.post("/v1/jobs", json=chat_job("after maintenance", model="t-circuit"))).json()
    done = await wait_for_status(client, job["id"])
    assert [a["model"] for a in done["attempts"]] == ["cb-primary"]
    providers = {p["target"]: p for p in (await admin_client.get("/v1/admin/providers")).json()["data"]}
    assert providers[target]["calls_5m"] >= 1 and providers["sim:cb-backup"]["calls_5m"] >= 1
    assert 0 <= providers[target]["error_rate_5m"] <= 1 and providers[target]["rpm_used"] >= 1
    missing = await admin_client.post("/v1/admin/providers/nope:x/circuit", json={"state": "open"})
    assert missing.status_code == 404 and missing.json()["code"] == "target_not_found"
    audit = (await admin_client.get("/v1/admin/audit", params={"action": "admin.circuit"})).json()["data"]
    assert [a["details"]["state"] for a in audit[:2]] == ["auto", "open"]


async def test_admin_jobs_search_across_users(admin_client: httpx.AsyncClient, client: httpx.AsyncClient,
                                              stack: Stack, user: User) -> None:
    other = await make_user(stack.env["DATABASE_URL"])
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {other.key}"}) as c2:
        mine = (await client.post("/v1/jobs", json=chat_job("mine"))).json()
        theirs = (await c2.post("/v1/jobs", json=chat_job("theirs"))).json()
        await wait_for_status(c2, theirs["id"])
    await wait_for_status(client, mine["id"])
    listed = (await admin_client.get("/v1/admin/jobs", params={"kind": "chat.completion", "limit": 50})).json()
    ids = [j["id"] for j in listed["data"]]
    assert theirs["id"] in ids and mine["id"] in ids and ids.index(theirs["id"]) < ids.index(mine["id"])
    only = (await admin_client.get("/v1/admin/jobs", params={"user_id": str(other.id)})).json()["data"]
    assert [j["id"] for j in only] == [theirs["id"]]
    one = (await admin_client.get(f"/v1/admin/jobs/{theirs['id']}")).json()
    assert one["status"] == "succeeded" and one["attempts"]
    events = (await admin_client.get(f"/v1/admin/jobs/{theirs['id']}/events")).json()["data"]
    assert events[0]["type"] == "queued" and events[-1]["type"] == "succeeded"
    bad = await admin_client.get("/v1/admin/jobs", params={"status": "sleeping"})
    assert bad.status_code == 400
    users = (await admin_client.get("/v1/admin/users", params={"email": other.email})).json()["data"]
    assert [u["id"] for u in users] == [str(other.id)] and users[0]["balance"] > 0


# --- metrics ------------------------------------------------------------------------------------------

def documented_series() -> set[str]:
    """Series named in docs/operations.md's metrics table."""
    text = (ROOT / "docs" / "operations.md").read_text()
    return set(re.findall(r"^\| `(switchyard_\w+)`", text, flags=re.M))


def scrape(url: str) -> dict[str, list[Any]]:
    """Samples by metric family name (counters without `_total`, as the parser names them)."""
    body = httpx.get(url, timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def family(scraped: dict[str, list[Any]], name: str) -> list[Any]:
    return scraped.get(name.removesuffix("_total"), [])


def total(samples: list[Any], suffix: str = "", **labels: str) -> float:
    return sum(s.value for s in samples if s.name.endswith(suffix)
               and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_every_documented_series_is_scraped_with_sensible_values(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    declared = {m._name + ("_total" if m._type == "counter" else "")
                for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    assert documented_series() == declared, documented_series() ^ declared

    key = uuid.uuid4().hex
    prompts = [chat_job("plain"), chat_job("streamed", stream=True),
               chat_job(f"[[sim: fault=429; retry_after=0.1; times=1; key={key}]] retried"),
               chat_job("[[sim: fault=500; model=fb-primary]] fell back", model="t-fallback")]
    for body in prompts:
        job = (await client.post("/v1/jobs", json=body)).json()
        assert (await wait_for_status(client, job["id"]))["status"] == "succeeded"
    # And one that fails like an outage: errors, a retry, a dead letter (failed after the 1 s hold).
    job = (await client.post("/v1/jobs", json=chat_job(f"{ERROR_MARKER} outage"))).json()
    assert (await wait_for_status(client, job["id"], timeout=30))["status"] == "failed"

    api = scrape(f"{stack.api_url}/metrics")
    worker = scrape(f"http://127.0.0.1:{stack.worker.env['SWITCHYARD_WORKER_METRICS_PORT']}/metrics")
    for name in sorted(documented_series()):
        assert family(api, name) or family(worker, name), f"{name} is scraped from neither the API nor a worker"

    assert total(family(api, "switchyard_http_requests_total"), method="POST", route="/v1/jobs", status="202") >= 4
    assert total(family(api, "switchyard_http_request_duration_seconds"), "_count", method="POST") >= 4
    assert total(family(api, "switchyard_jobs_submitted_total"), kind="chat.completion", queue="chat") >= 4
    assert {s.labels["queue"] for s in family(api, "switchyard_queue_depth")} >= {"chat", "chat.bulk", "files"}
    assert {s.value for s in family(api, "switchyard_circuit_state")} <= {0, 1, 2}
    assert total(family(worker, "switchyard_jobs_total"), kind="chat.completion", status="succeeded") >= 4
    assert total(family(worker, "switchyard_queue_wait_seconds"), "_count", queue="chat") >= 4
    assert total(family(worker, "switchyard_job_duration_seconds"), "_count", status="succeeded") >= 4
    assert total(family(worker, "switchyard_provider_ttft_seconds"), "_count") >= 1
    assert total(family(worker, "switchyard_retries_total"), target="sim:sim-small") >= 1
    assert total(family(worker, "switchyard_fallbacks_total"), model="t-fallback") >= 1
    assert total(family(worker, "switchyard_tokens_total"), direction="output") > 0
    assert total(family(worker, "switchyard_credits_total"), operation="settled") > 0
    assert total(family(worker, "switchyard_dead_letters_total"), queue="chat") >= 1
    assert total(family(worker, "dramatiq_message_errors_total"), queue_name="chat") >= 2
    assert total(family(api, "switchyard_credits_total"), operation="reserved") > 0
    # No per-user labels anywhere.
    for scraped in (api, worker):
        for samples in scraped.values():
            assert all(not {"user", "user_id", "owner_id", "email"} & set(s.labels) for s in samples)

    # The Grafana dashboard charts only series that exist, grouped by labels they have.
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "switchyard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    charted = set()
    for expr in exprs:
        names = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\b((?:switchyard|dramatiq)_\w+)", expr)}
        assert names, expr
        for name in names:
            samples = family(api, name) + family(worker, name)
            assert samples, f"the dashboard charts {name}, which neither the API nor a worker exposes"
            labels = {k for s in samples for k in s.labels} | {"le"}
            for group in re.findall(r"by \(([^)]*)\)", expr):
                assert {g.strip() for g in group.split(",")} <= labels, (expr, labels)
            charted.add(name)
    assert {n.removesuffix("_total") for n in documented_series()} <= {n.removesuffix("_total") for n in charted}


# --- readiness: the schema version ----------------------------------------------------------------

async def test_readyz_requires_the_schema_version(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as anon:
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        ready = await anon.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "schema": "ok"}
        with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
            version = conn.execute("SELECT version FROM schema_version").fetchone()[0]  # type: ignore[index]
            conn.execute("UPDATE schema_version SET version = 1")
            try:
                behind = await anon.get("/readyz")
                assert behind.status_code == 503 and "switchyard migrate" in behind.json()["checks"]["schema"]
                assert (await anon.get("/healthz")).status_code == 200  # liveness needs no dependency
            finally:
                conn.execute("UPDATE schema_version SET version = %s", (version,))
        assert (await anon.get("/readyz")).status_code == 200


# --- rotating the token secret ---------------------------------------------------------------------

def test_a_rotated_jwt_secret_keeps_accepting_tokens_of_the_previous_one(stack: Stack) -> None:
    import msgspec

    from jobs.errors import InvalidToken
    from jobs.tokens import decode_access_token, encode_access_token

    old = msgspec.structs.replace(stack.settings, jwt_secret="old-secret-" + "x" * 32)
    token = encode_access_token(old, uuid.uuid4(), "user", "free")
    rotated = msgspec.structs.replace(stack.settings, jwt_secret="new-secret-" + "y" * 32,
                                      jwt_previous_secret=old.jwt_secret)
    assert decode_access_token(rotated, token).role == "user"
    assert decode_access_token(rotated, encode_access_token(rotated, uuid.uuid4(), "admin", "free")).role == "admin"
    finished = msgspec.structs.replace(rotated, jwt_previous_secret="")
    with pytest.raises(InvalidToken):
        decode_access_token(finished, token)


# --- holds: what the reconciler re-sends and what it leaves alone ---------------------------------

def _dead_letter(redis_client: Any, job_id: str, *, score_ms: int, message_id: str | None = None) -> str:
    """A dead letter of `job_id` in chat's XQ, as Dramatiq's nack leaves it (its own message id), and its hold."""
    import dramatiq

    from jobs import queues

    mid = message_id or str(uuid.uuid4())
    message = dramatiq.Message(queue_name="chat", actor_name="run_job:chat", args=(job_id,), kwargs={},
                               options={"redis_message_id": mid, "retries": 1, "traceback": "RuntimeError: outage"})
    redis_client.zadd("switchyard:chat.XQ", {mid: score_ms})
    redis_client.hset("switchyard:chat.XQ.msgs", mid, message.encode())
    queues.hold(redis_client, "chat", job_id, mid)
    return mid


async def test_a_held_job_is_not_re_sent_even_with_a_lapsed_lease_and_a_stale_hold_is_dropped(
    admin_client: httpx.AsyncClient, client: httpx.AsyncClient, stack: Stack, user: User, redis_client: Any
) -> None:
    from tests.test_delivery import insert_unsent_job

    # Held: running (its worker could not hand it back: the database was down), lease lapsed long ago.
    held = str(await insert_unsent_job(stack.env["DATABASE_URL"], user, "held through an outage"))
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE jobs SET status = 'running', attempts = 2, lease_until = now() - interval '1 minute',"
                     " enqueued_at = now() - interval '1 minute' WHERE id = %s", (held,))
    # The hold has not run out (the session holds 1 s, so the dead letter is dated ahead).
    mid = _dead_letter(redis_client, held, score_ms=int(time.time() * 1000) + 600_000)
    # Stale: a hold whose dead letter is gone (requeued meanwhile); its job's message is lost.
    stale = str(await insert_unsent_job(stack.env["DATABASE_URL"], user, "stale hold"))
    from jobs import queues
    queues.hold(redis_client, "chat", stale, str(uuid.uuid4()))

    # The reconciler (every 0.5 s, after 2 s) sends the stale one again, and leaves the held one alone.
    assert (await wait_for_status(client, stale, timeout=30))["status"] == "succeeded"
    await asyncio.sleep(2)
    assert not redis_client.hexists("switchyard:chat.msgs", held)
    job = (await admin_client.get(f"/v1/admin/jobs/{held}")).json()
    assert job["status"] == "running" and job["claims"] == 2
    assert not redis_client.hexists("sy:held:{chat}", stale)

    purged = await admin_client.post("/v1/admin/queues/chat/dead-letters/purge", json={"message_ids": [mid]})
    assert purged.json() == {"queue": "chat", "purged": 1, "jobs_failed": 1}
    again = await admin_client.post("/v1/admin/queues/chat/dead-letters/purge", json={"message_ids": [mid]})
    assert again.json() == {"queue": "chat", "purged": 0, "jobs_failed": 0}  # counted once
    assert (await admin_client.get(f"/v1/admin/jobs/{held}")).json()["error"]["code"] == "delivery_failed"
