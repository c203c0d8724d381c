"""File processing under its limits and under a crash: a worker and an API of this module's own.

The session's worker is stopped for the module, so every `file.process` job
lands on a pool started here with small limits (pages, chunks), next to an API
with small store and query limits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import openai
import psycopg
import pytest

from scripts.embedded import free_port
from scripts.procs import Process, start_api, start_worker
from tests.conftest import INTERACTIVE_LANES, Stack, User
from tests.documents import make_pdf, prose
from tests.test_knowledge import chunk_count, processed, upload
from tests.test_resilience import events_so_far

LIMITS = {"SWITCHYARD_MAX_FILE_PAGES": "2", "SWITCHYARD_MAX_FILE_CHUNKS": "20",
          "SWITCHYARD_MAX_VECTOR_STORE_FILES": "2", "SWITCHYARD_MAX_QUERY_CHARS": "50"}


@dataclass
class Limited:
    url: str
    env: dict[str, str]
    api: Process
    worker: Process


@pytest.fixture(scope="module")
def limited(stack: Stack) -> Iterator[Limited]:
    stack.worker.stop()
    env = {**stack.env, **LIMITS}
    port = free_port()
    api = start_api(env, port, stack.log_dir, name="api-limits")
    worker = start_worker(env, stack.log_dir, name="worker-limits", queues=INTERACTIVE_LANES)
    limited = Limited(f"http://127.0.0.1:{port}", env, api, worker)
    try:
        yield limited
    finally:
        limited.worker.stop()  # the pool running now: a test may have replaced the first
        api.stop()
        stack.worker = start_worker(stack.env, stack.log_dir, queues=INTERACTIVE_LANES)


@pytest.fixture
async def lclient(limited: Limited, user: User) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.url, headers={"Authorization": f"Bearer {user.key}"},
                                 timeout=60) as client:
        yield client


def ledger(stack: Stack, job_id: str) -> dict[str, list[int]]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT kind, amount FROM credit_ledger WHERE job_id = %s ORDER BY id", (job_id,))
        out: dict[str, list[int]] = {}
        for kind, amount in rows:
            out.setdefault(kind, []).append(int(amount))
    return out


async def test_each_limit_answers_its_own_code(stack: Stack, user: User, limited: Limited,
                                               lclient: httpx.AsyncClient) -> None:
    pages = await upload(lclient, "three-pages.pdf", make_pdf(["one", "two", "three"]))
    long = await upload(lclient, "long.txt", prose(60_000, seed=2).encode())
    for file, code in ((pages, "file_too_many_pages"), (long, "file_too_many_chunks")):
        row = await processed(lclient, file, status="error")
        assert row["status_details"].startswith(f"{code}:"), row
        assert chunk_count(stack, file["id"]) == 0
        job = (await lclient.get(f"/v1/jobs/{file['process_job_id']}")).json()
        assert job["error"]["code"] == code
        # Nothing was spent on a file that could not be read: the whole reservation came back.
        entries = ledger(stack, file["process_job_id"])
        assert entries.get("settle", [0]) == [0] and entries["release"] == entries["reserve"]

    small = [await upload(lclient, f"note-{i}.txt", f"note number {i} about tides".encode()) for i in range(3)]
    for f in small:
        await processed(lclient, f)
    oai = openai.AsyncOpenAI(base_url=limited.url + "/v1", api_key=user.key, max_retries=0)
    store = await oai.vector_stores.create(name="two at most", file_ids=[small[0]["id"], small[1]["id"]])
    with pytest.raises(openai.APIStatusError) as full:
        await oai.vector_stores.files.create(vector_store_id=store.id, file_id=small[2]["id"])
    assert full.value.status_code == 413 and full.value.code == "vector_store_full"
    with pytest.raises(openai.APIStatusError) as too_many:
        await oai.vector_stores.create(file_ids=[f["id"] for f in small])
    assert too_many.value.status_code == 413 and too_many.value.code == "vector_store_full"
    assert len((await oai.vector_stores.list()).data) == 1  # the refused store was not created

    long_query = "tides " * 20
    with pytest.raises(openai.APIStatusError) as query:
        await oai.vector_stores.search(vector_store_id=store.id, query=long_query)
    assert query.value.status_code == 413 and query.value.code == "query_too_long"
    native = await lclient.post("/v1/search", json={"query": long_query})
    assert native.status_code == 413 and native.json()["code"] == "query_too_long"
    assert native.json()["request_id"]
    blank = await lclient.post("/v1/search", json={"query": "   "})
    assert blank.status_code in (400, 422) and blank.json()["code"] == "invalid_request"
    await oai.close()


async def test_a_worker_killed_mid_embedding_leaves_the_file_processed_once(
        stack: Stack, user: User, limited: Limited, lclient: httpx.AsyncClient) -> None:
    # Slow embeddings (0.4 s a call, 16 texts a call) so the kill lands in the middle of the embedding stage.
    async with httpx.AsyncClient(base_url=stack.simulator_url) as sim:
        await sim.post("/_sim/faults", json={"model": "emb-knowledge", "directives": "ttft_ms=400"})
    limited.worker.stop()
    victim = start_worker(limited.env, stack.log_dir, name="worker-victim", queues=INTERACTIVE_LANES)
    try:
        file = await upload(lclient, "manual.txt", prose(40_000, seed=4).encode())
        job_id = file["process_job_id"]
        await events_so_far(lclient, job_id, "progress", timeout=30)
        victim.kill()
        limited.worker = start_worker(limited.env, stack.log_dir, name="worker-limits-2", queues=INTERACTIVE_LANES)
        row = await processed(lclient, file, timeout=90)
    finally:
        victim.kill()
        async with httpx.AsyncClient(base_url=stack.simulator_url) as sim:
            await sim.delete("/_sim/faults", params={"model": "emb-knowledge"})
    job = (await lclient.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "succeeded" and job["claims"] >= 2, job
    assert chunk_count(stack, file["id"]) == row["processed"]["chunks"] == job["result"]["chunks"] > 16
    entries = ledger(stack, job_id)
    assert len(entries["reserve"]) == len(entries["settle"]) == len(entries.get("release", [0])) == 1
    assert entries["reserve"][0] == entries["settle"][0] + entries.get("release", [0])[0]
    assert entries["settle"][0] == job["result"]["usage"]["prompt_tokens"]  # t-knowledge: a credit a token
