"""File processing and search end to end: real files uploaded through the API, processed by the
workers (extract → chunk → embed on the simulator → pgvector), searched natively and with the `openai` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import psycopg
import pytest

from scripts import retrieval_set
from tests.conftest import Stack, User, make_user, wait_for_status
from tests.documents import SENTENCES, make_docx, make_pdf, make_png, prose
from tests.test_openai_compat import sdk
from tests.test_streaming import sse_events


def pages_pdf() -> bytes:
    """Three pages of prose, each about two chunks long, with `SENTENCES[i]` in the middle of page i + 1."""
    return make_pdf([f"{prose(900, seed=i)}\n\n{SENTENCES[i]}\n\n{prose(900, seed=10 + i)}" for i in range(3)])


HTML = b"""<!doctype html><html><head><title>Harbour guide</title><script>var tracker = 'beacon';</script></head>
<body><header><nav><a href="/">Home</a> <a href="/shop">Shop the lighthouse store</a></nav></header>
<main><h1>Tide tables</h1><p>The spring tide at Port Meridian peaks at noon on the equinox.</p>
<p>Mooring fees are charged per metre of hull.</p></main>
<aside>Accept our cookies for a better lighthouse experience.</aside>
<footer>Copyright lighthouse corporation</footer></body></html>"""


async def upload(client: httpx.AsyncClient, name: str, data: bytes, purpose: str = "assistants") -> dict[str, Any]:
    response = await client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def processed(client: httpx.AsyncClient, file: dict[str, Any], status: str = "processed",
                    timeout: float = 60) -> dict[str, Any]:
    """Wait for the file's processing job to end; the file as it then is (asserting its status)."""
    assert file["status"] == "processing" and file["process_job_id"]
    await wait_for_status(client, file["process_job_id"], timeout=timeout)
    row: dict[str, Any] = (await client.get(f"/v1/files/{file['id']}")).json()
    assert row["status"] == status, row
    return row


async def search(client: httpx.AsyncClient, query: str, **extra: Any) -> list[dict[str, Any]]:
    response = await client.post("/v1/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["data"]
    return hits


def chunk_count(stack: Stack, file_id: str) -> int:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM file_chunks WHERE file_id = %s", (file_id,)).fetchone()
    return int(row[0]) if row else 0


async def test_a_pdf_is_processed_with_progress_events_and_found_by_search(
        stack: Stack, client: httpx.AsyncClient) -> None:
    file = await upload(client, "field-notes.pdf", pages_pdf())
    events = await sse_events(client, f"/v1/jobs/{file['process_job_id']}/events")
    types = [e["type"] for e in events]
    assert types[:2] == ["queued", "started"] and types[-1] == "succeeded", types
    stages = [e["data"]["stage"] for e in events if e["type"] == "progress"]
    assert stages[:3] == ["extracting", "chunking", "embedding"] and stages[-1] == "storing", stages
    embedding = [e["data"] for e in events if e["type"] == "progress" and e["data"]["stage"] == "embedding"]
    assert embedding[0]["done"] == 0 and embedding[-1]["done"] == embedding[-1]["total"] >= 1
    result = events[-1]["data"]["result"]
    assert result["type"] == "pdf" and result["pages"] == 3 and result["dimensions"] == 256

    row = (await client.get(f"/v1/files/{file['id']}")).json()
    assert row["status"] == "processed" and row["status_details"] is None
    assert row["processed"]["chunks"] == result["chunks"] == chunk_count(stack, file["id"])

    for mode in ("hybrid", "vector"):
        hits = await search(client, "quartz falcon migrates", mode=mode)
        top = hits[0]
        assert top["file_id"] == file["id"] and "quartz falcon" in top["text"], (mode, hits)
        assert top["filename"] == "field-notes.pdf" and top["page"] <= 2 <= top["page_end"], top
        assert top["vector_rank"] == 1
        assert 0 < top["score"] <= 1 and top["char_end"] > top["char_start"]


async def test_openai_sdk_vector_stores_round_trip_and_only_the_owner_sees_them(
        stack: Stack, user: User, client: httpx.AsyncClient) -> None:
    oai = sdk(stack, user)
    html = await upload(client, "guide.html", HTML)
    docx_file = await upload(client, "report.docx", make_docx())
    await processed(client, html)
    await processed(client, docx_file)
    store = await oai.vector_stores.create(name="harbour", file_ids=[html["id"]])
    assert store.name == "harbour" and store.file_counts.completed == 1 and store.status == "completed"
    added = await oai.vector_stores.files.create(vector_store_id=store.id, file_id=docx_file["id"],
                                                 attributes={"kind": "report", "year": 2026})
    assert added.status == "completed" and added.attributes == {"kind": "report", "year": 2026}
    listed = await oai.vector_stores.files.list(vector_store_id=store.id)
    assert {f.id for f in listed.data} == {html["id"], docx_file["id"]}

    page = await oai.vector_stores.search(vector_store_id=store.id, query="spring tide at Port Meridian")
    results = list(page.data)
    assert results[0].file_id == html["id"] and "spring tide" in results[0].content[0].text
    assert all("lighthouse" not in r.content[0].text for r in results)  # boilerplate never indexed
    report = await oai.vector_stores.search(vector_store_id=store.id, query="tides navigator",
                                            filters={"type": "eq", "key": "kind", "value": "report"})
    assert [r.file_id for r in report.data] == [docx_file["id"]]
    newer = await oai.vector_stores.search(vector_store_id=store.id, query="tides",
                                           filters={"type": "gt", "key": "year", "value": 2030})
    assert list(newer.data) == []

    # Another user: every id is 404, and their searches never see these chunks.
    stranger = await make_user(stack.env["DATABASE_URL"])
    other = sdk(stack, stranger)
    with pytest.raises(openai.NotFoundError):
        await other.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        await other.vector_stores.search(vector_store_id=store.id, query="tide")
    with pytest.raises(openai.NotFoundError):
        await other.vector_stores.files.create(vector_store_id=store.id, file_id=html["id"])
    theirs = await other.vector_stores.create(name="mine")
    with pytest.raises(openai.NotFoundError):
        await other.vector_stores.files.create(vector_store_id=theirs.id, file_id=html["id"])
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {stranger.key}"}) as c:
        assert await search(c, "spring tide Port Meridian") == []
        assert (await c.get(f"/v1/files/{html['id']}/chunks")).status_code == 404

    deleted = await oai.vector_stores.delete(store.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await oai.vector_stores.retrieve(store.id)


async def test_exact_terms_win_with_hybrid_where_vectors_rank_them_lower(
        stack: Stack, client: httpx.AsyncClient) -> None:
    # A short note about timeouts is nearest to the query by vectors; the long runbook that names the
    # exact error code once is diluted. Full-text matching every term puts the runbook first.
    note = "Request timeout settings. The timeout is thirty seconds; a timeout retries twice."
    runbook = prose(1800, seed=3) + " Error ERR-4471 means the upstream timeout was reached. " + prose(300, seed=4)
    files = [await upload(client, "note.txt", note.encode()), await upload(client, "runbook.txt", runbook.encode())]
    for f in files:
        await processed(client, f)
    query = "ERR-4471 timeout"
    vector = await search(client, query, mode="vector")
    hybrid = await search(client, query)
    assert vector[0]["file_id"] == files[0]["id"]
    assert hybrid[0]["file_id"] == files[1]["id"] and "ERR-4471" in hybrid[0]["text"], hybrid
    assert hybrid[0]["text_rank"] == 1


async def test_bad_files_fail_with_their_code_and_leave_no_chunks(stack: Stack, client: httpx.AsyncClient) -> None:
    cases = {
        "corrupt.pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 8, "file_corrupt"),
        "locked.pdf": (make_pdf(["secret plans"], owner_password="o", user_password="pw"), "file_encrypted"),
        "photo.pdf": (make_png(), "unsupported_file_type"),
        "empty.txt": (b"   \n\n  ", "file_has_no_text"),
    }
    uploaded = {name: await upload(client, name, data) for name, (data, _) in cases.items()}
    for name, (_, code) in cases.items():
        row = await processed(client, uploaded[name], status="error")
        assert row["status_details"].startswith(f"{code}:"), row
        job = (await client.get(f"/v1/jobs/{uploaded[name]['process_job_id']}")).json()
        assert job["status"] == "failed" and job["error"]["code"] == code
        assert chunk_count(stack, uploaded[name]["id"]) == 0


async def test_reprocessing_replaces_chunks_and_deleting_removes_them(stack: Stack, client: httpx.AsyncClient) -> None:
    file = await upload(client, "notes.md", ("# Notes\n\n" + prose(6000, seed=9)).encode())
    first = await processed(client, file)
    before = chunk_count(stack, file["id"])
    assert before == first["processed"]["chunks"] > 1
    again = await client.post(f"/v1/files/{file['id']}/process")
    assert again.status_code == 202 and again.json()["process_job_id"] != file["process_job_id"]
    await processed(client, again.json())
    assert chunk_count(stack, file["id"]) == before
    assert (await client.post("/v1/search", json={"query": "x" * 5000})).json()["code"] == "query_too_long"
    batch_file = await upload(client, "lines.jsonl", b"{}\n", purpose="batch")
    assert batch_file["status"] == "processed" and batch_file["process_job_id"] is None
    refused = await client.post(f"/v1/files/{batch_file['id']}/process")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "file_not_searchable"
    assert (await client.delete(f"/v1/files/{file['id']}")).status_code == 200
    assert chunk_count(stack, file["id"]) == 0
    await asyncio.sleep(0)


async def test_hybrid_ranks_the_labelled_set_at_least_as_well_as_vectors_and_finds_exact_terms(
        stack: Stack, client: httpx.AsyncClient) -> None:
    uploaded = [await upload(client, name, text.encode()) for name, text in retrieval_set.DOCUMENTS.items()]
    names = {f["id"]: f["filename"] for f in uploaded}
    for f in uploaded:
        await processed(client, f)

    def ranker(mode: str) -> Callable[[str], Awaitable[list[str]]]:
        async def rank(query: str) -> list[str]:
            return [names[hit["file_id"]] for hit in await search(client, query, mode=mode, top_k=20)]
        return rank

    scores = {mode: await retrieval_set.evaluate(ranker(mode)) for mode in ("vector", "text", "hybrid")}
    summary = {mode: {kind: round(m.mrr, 3) for kind, m in by_kind.items()} for mode, by_kind in scores.items()}
    assert scores["hybrid"]["all"].mrr >= scores["vector"]["all"].mrr, summary
    assert scores["hybrid"]["exact"].hit_at_1 == 1.0, summary
    assert scores["vector"]["exact"].hit_at_1 < scores["hybrid"]["exact"].hit_at_1, summary
    assert scores["hybrid"]["topic"].recall_at_5 >= 0.9, summary
