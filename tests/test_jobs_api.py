"""The job API over real HTTP, with a real worker pool and the simulator."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import Stack, User, chat_job, wait_for_status


async def test_submitted_job_runs_to_success_with_usage_and_attempt(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/jobs", json=chat_job("Write a haiku about rail yards", max_tokens=12))
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["status"] == "queued" and job["queue"] == "chat"
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"

    done = await wait_for_status(client, job["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["finish_reason"] == "length"  # 12 < the simulator's 16-word reply
    assert len(result["content"].split()) == 12
    assert result["usage"] == done["usage"]
    assert done["usage"]["completion_tokens"] == 12
    assert done["usage"]["prompt_tokens"] == 6  # words in the prompt, as the simulator counts
    assert [a["outcome"] for a in done["attempts"]] == ["ok"]
    assert done["attempts"][0]["provider"] == "sim"
    assert done["claims"] == 1


async def test_same_prompt_gives_same_text(client: httpx.AsyncClient) -> None:
    ids = [(await client.post("/v1/jobs", json=chat_job("determinism please"))).json()["id"] for _ in range(2)]
    a, b = [await wait_for_status(client, i) for i in ids]
    assert a["result"]["content"] == b["result"]["content"] != ""


async def test_bulk_priority_goes_to_the_bulk_queue(client: httpx.AsyncClient) -> None:
    body = chat_job("bulk work") | {"priority": "bulk"}
    job = (await client.post("/v1/jobs", json=body)).json()
    assert job["queue"] == "chat.bulk"
    assert (await wait_for_status(client, job["id"]))["status"] == "succeeded"


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    cases = {
        "input.messages[0]": {
            "kind": "chat.completion",
            "input": {"model": "sim-small", "messages": [{"role": "user", "content": "x", "colour": 1}]},
        },
        "input.max_tokens": chat_job(max_tokens=0),
        "input.messages": {"kind": "chat.completion", "input": {"model": "sim-small", "messages": []}},
        "kind": {"kind": "teleport", "input": {}},
        "input.temperature": chat_job(temperature=7),
    }
    for field, body in cases.items():
        resp = await client.post("/v1/jobs", json=body)
        assert resp.status_code == 400, (field, resp.text)
        problem = resp.json()
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == "validation_error"
        assert problem["request_id"] == resp.headers["x-request-id"]
        assert any(field in str(e.get("key", "")) + e["message"] for e in problem["errors"]), (field, problem)


async def test_unknown_field_is_rejected_naming_it(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/jobs", json=chat_job() | {"priority": "interactive", "colour": "red"})
    assert resp.status_code == 400
    assert "colour" in resp.json()["detail"]


async def test_unknown_model_lists_the_valid_ones(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/jobs", json=chat_job(model="gpt-17"))
    assert resp.status_code == 404
    problem = resp.json()
    assert problem["code"] == "model_not_found"
    assert "sim-small" in problem["available"]


async def test_malformed_json_and_oversized_body_are_problems(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["code"] == "invalid_json"
    huge = chat_job("word " * 300_000)  # ~1.5 MB > the 1 MiB default limit
    resp = await client.post("/v1/jobs", json=huge)
    assert resp.status_code == 413
    assert resp.json()["code"] == "body_too_large"


async def test_missing_or_bad_key_is_401(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as anon:
        resp = await anon.get("/v1/jobs")
        assert resp.status_code == 401 and resp.json()["code"] == "unauthorized"
        resp = await anon.get("/v1/jobs", headers={"Authorization": "Bearer sk-sy-forged"})
        assert resp.status_code == 401


async def test_another_owners_job_is_404(client: httpx.AsyncClient, stack: Stack, other_user: User) -> None:
    job = (await client.post("/v1/jobs", json=chat_job())).json()
    async with httpx.AsyncClient(base_url=stack.api_url,
                                 headers={"Authorization": f"Bearer {other_user.key}"}) as other:
        for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/events"):
            resp = await other.get(path)
            assert resp.status_code == 404, path
            assert resp.json()["code"] == "not_found"
        listed = (await other.get("/v1/jobs")).json()
        assert listed["data"] == []
    assert (await client.get("/v1/jobs/not-a-uuid")).status_code == 404


async def test_idempotency_key_returns_the_original_job(client: httpx.AsyncClient) -> None:
    body = chat_job("only once")
    first = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    second = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    conflict = await client.post("/v1/jobs", json=chat_job("something else"), headers={"Idempotency-Key": "abc-1"})
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"
    assert len((await client.get("/v1/jobs")).json()["data"]) == 1


async def test_concurrent_duplicates_with_one_key_create_one_job(client: httpx.AsyncClient) -> None:
    body = chat_job("race")
    responses = await asyncio.gather(*[
        client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "race-1"}) for _ in range(10)
    ])
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    done = await wait_for_status(client, responses[0].json()["id"])
    assert done["claims"] == 1


async def test_list_is_newest_first_with_cursor_and_filters(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        ids.append((await client.post("/v1/jobs", json=chat_job(f"job {i}"))).json()["id"])
    for job_id in ids:
        await wait_for_status(client, job_id)
    page1 = (await client.get("/v1/jobs", params={"limit": 2})).json()
    assert [j["id"] for j in page1["data"]] == ids[::-1][:2] and page1["has_more"]
    page2 = (await client.get("/v1/jobs", params={"limit": 2, "cursor": page1["next_cursor"]})).json()
    page3 = (await client.get("/v1/jobs", params={"limit": 2, "cursor": page2["next_cursor"]})).json()
    assert [j["id"] for j in page2["data"] + page3["data"]] == ids[::-1][2:]
    assert not page3["has_more"] and page3["next_cursor"] is None
    assert len((await client.get("/v1/jobs", params={"status": "succeeded"})).json()["data"]) == 5
    assert (await client.get("/v1/jobs", params={"status": "failed"})).json()["data"] == []
    assert len((await client.get("/v1/jobs", params={"kind": "chat.completion"})).json()["data"]) == 5
    bad = await client.get("/v1/jobs", params={"status": "sleeping"})
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"


async def test_provider_rejection_fails_the_job_with_a_code(client: httpx.AsyncClient) -> None:
    job = (await client.post("/v1/jobs", json=chat_job("[[sim: fault=400]] bad"))).json()
    done = await wait_for_status(client, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "provider_rejected"
    assert done["attempts"][0]["outcome"] == "error"


async def test_health_readiness_and_openapi(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as anon:
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        ready = (await anon.get("/readyz")).json()
        assert ready["checks"] == {"postgres": "ok", "redis": "ok", "schema": "ok"}
        schema = (await anon.get("/docs/openapi.json")).json()
        assert "/v1/jobs" in schema["paths"]
        assert (await anon.get("/docs")).status_code == 200


async def test_prompt_larger_than_the_limit_is_413(client: httpx.AsyncClient) -> None:
    # 3 messages of 150k characters: each under the per-message cap, together over 400k.
    body = {"kind": "chat.completion",
            "input": {"model": "sim-small", "messages": [{"role": "user", "content": "x" * 150_000}] * 3}}
    resp = await client.post("/v1/jobs", json=body)
    assert resp.status_code == 413
    assert resp.json()["code"] == "prompt_too_large"


async def test_a_request_postgresql_cannot_store_fails_alone_in_its_group(client: httpx.AsyncClient) -> None:
    """Submissions arriving together share one INSERT (jobs/submitter.py): one bad row must not refuse the others."""
    bodies = [chat_job(f"fine {i}") for i in range(30)]
    bodies[13] = chat_job("a NUL \u0000 PostgreSQL cannot store")
    responses = await asyncio.gather(*(client.post("/v1/jobs", json=body) for body in bodies))
    assert responses[13].status_code == 400 and responses[13].json()["code"] == "bad_request"
    assert [r.status_code for i, r in enumerate(responses) if i != 13] == [202] * 29
