"""Logs: one JSON object per line with LOG_FORMAT=json, request ids bound, no secrets."""

from __future__ import annotations

import json

import httpx

from scripts.embedded import free_port
from scripts.procs import start_api
from tests.conftest import Stack, User, chat_job, wait_for_status


async def test_json_logs_carry_request_and_job_ids_and_never_the_key(stack: Stack, user: User) -> None:
    port = free_port()
    api = start_api({**stack.env, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}, port, stack.log_dir, name="api-json")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {user.key}"}) as c:
            resp = await c.post("/v1/jobs", json=chat_job("log me"), headers={"X-Request-ID": "trace-abc-123"})
            assert resp.headers["x-request-id"] == "trace-abc-123"
            await wait_for_status(c, resp.json()["id"])
            await c.get("/v1/jobs/not-a-job")
    finally:
        api.stop()
    text = api.log()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert records, text[-2000:]
    request_lines = [r for r in records if r["record"]["extra"].get("request_id") == "trace-abc-123"]
    assert any("POST /v1/jobs 202" in r["record"]["message"] for r in request_lines)
    assert user.key not in text and user.key[len("sk-sy-"):] not in text
    assert "log me" not in text  # prompts are never logged
    worker_log = stack.worker.log()
    assert user.key not in worker_log and "log me" not in worker_log
    assert f"job_id={resp.json()['id']}" in worker_log  # the worker binds the job id
