"""Event streams: every event exactly once, in order, whenever the client connects."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from tests.conftest import Stack, User, chat_job, wait_for_status

#: ~20 tokens at 40 tokens/s: about half a second of streaming.
SLOW = "[[sim: tps=40; tokens=20]] tell me a story"


def ws_url(stack: Stack, path: str) -> str:
    return stack.api_url.replace("http://", "ws://") + path


async def ws_events(stack: Stack, user: User, path: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Collect events from a WebSocket until the server closes it (or `limit` events)."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(ws_url(stack, path),
                                  additional_headers={"Authorization": f"Bearer {user.key}"}) as ws:
        async for raw in ws:
            events.append(json.loads(raw))
            if limit is not None and len(events) >= limit:
                break
    return events


async def sse_events(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Collect SSE events until the server ends the response; checks `id:` matches `seq`."""
    events: list[dict[str, Any]] = []
    async with client.stream("GET", path, headers=headers) as resp:
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        event_id = None
        async for line in resp.aiter_lines():
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                event = json.loads(line[5:].strip())
                assert event["seq"] == event_id
                events.append(event)
    return events


def assert_complete_log(events: list[dict[str, Any]], job_id: str, first_seq: int = 1) -> None:
    """Sequence numbers are consecutive from `first_seq`, and the log ends with success."""
    assert [e["seq"] for e in events] == list(range(first_seq, first_seq + len(events))), events
    assert all(e["job_id"] == job_id for e in events)
    assert events[-1]["type"] == "succeeded"
    if first_seq == 1:
        assert [e["type"] for e in events[:2]] == ["queued", "started"]


def deltas_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["text"] for e in events if e["type"] == "delta")


async def test_ws_subscribers_early_mid_and_late_get_every_event_once(
    client: httpx.AsyncClient, stack: Stack, user: User
) -> None:
    job = (await client.post("/v1/jobs", json=chat_job(SLOW, stream=True))).json()
    path = f"/v1/jobs/{job['id']}/stream"
    early = asyncio.create_task(ws_events(stack, user, path))
    # Mid-stream: join once a few deltas are out.
    first_five = await ws_events(stack, user, path, limit=5)
    assert first_five[-1]["type"] == "delta"
    mid = asyncio.create_task(ws_events(stack, user, path))
    early_events, mid_events = await asyncio.gather(early, mid)
    late_events = await ws_events(stack, user, path)

    for events in (early_events, mid_events, late_events):
        assert_complete_log(events, job["id"])
        assert len([e for e in events if e["type"] == "delta"]) == 20
    assert early_events == mid_events == late_events
    done = await wait_for_status(client, job["id"])
    assert deltas_text(early_events) == done["result"]["content"]
    assert early_events[-1]["data"]["result"]["content"] == done["result"]["content"]


async def test_ws_resume_after_seq(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    job = (await client.post("/v1/jobs", json=chat_job(SLOW, stream=True))).json()
    full = await ws_events(stack, user, f"/v1/jobs/{job['id']}/stream")
    resumed = await ws_events(stack, user, f"/v1/jobs/{job['id']}/stream?after=7")
    assert resumed == full[7:]
    assert_complete_log(resumed, job["id"], first_seq=8)


async def test_sse_early_late_and_last_event_id(client: httpx.AsyncClient, stack: Stack) -> None:
    job = (await client.post("/v1/jobs", json=chat_job(SLOW, stream=True))).json()
    path = f"/v1/jobs/{job['id']}/events"
    early = await sse_events(client, path)
    assert_complete_log(early, job["id"])
    late = await sse_events(client, path)
    assert late == early
    resumed = await sse_events(client, path, headers={"Last-Event-ID": "10"})
    assert resumed == early[10:]
    assert (await sse_events(client, path + "?after=3")) == early[3:]


async def test_non_streaming_job_has_no_deltas(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    job = (await client.post("/v1/jobs", json=chat_job("quiet please"))).json()
    events = await ws_events(stack, user, f"/v1/jobs/{job['id']}/stream")
    assert [e["type"] for e in events] == ["queued", "started", "succeeded"]


async def test_failed_job_stream_ends_with_failed(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    job = (await client.post("/v1/jobs", json=chat_job("[[sim: fault=401]] no", stream=True))).json()
    events = await ws_events(stack, user, f"/v1/jobs/{job['id']}/stream")
    assert [e["type"] for e in events] == ["queued", "started", "failed"]
    assert events[-1]["data"]["error"]["code"] == "provider_rejected"


async def test_all_events_socket_streams_every_job_of_the_caller_only(
    client: httpx.AsyncClient, stack: Stack, user: User, other_user: User
) -> None:
    received: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []

    async def collect(who: User, into: list[dict[str, Any]], stop_after_terminals: int) -> None:
        async with websockets.connect(ws_url(stack, "/v1/events"),
                                      additional_headers={"Authorization": f"Bearer {who.key}"}) as ws:
            ready.set()
            terminals = 0
            async for raw in ws:
                into.append(json.loads(raw))
                if into[-1]["type"] == "succeeded":
                    terminals += 1
                    if terminals == stop_after_terminals:
                        return

    ready = asyncio.Event()
    mine = asyncio.create_task(collect(user, received, 2))
    await ready.wait()
    ready.clear()
    theirs = asyncio.create_task(collect(other_user, others, 1))
    await ready.wait()
    await asyncio.sleep(0.2)  # let both subscriptions reach Redis
    ids = [(await client.post("/v1/jobs", json=chat_job(f"job {i}", stream=True))).json()["id"] for i in range(2)]
    await asyncio.wait_for(mine, 30)
    assert {e["job_id"] for e in received} == set(ids)
    for job_id in ids:
        seqs = [e["seq"] for e in received if e["job_id"] == job_id]
        assert seqs == list(range(1, len(seqs) + 1))
    await asyncio.sleep(0.3)
    assert others == []
    theirs.cancel()


async def test_ws_refuses_strangers_and_other_owners(client: httpx.AsyncClient, stack: Stack, other_user: User) -> None:
    job = (await client.post("/v1/jobs", json=chat_job())).json()
    path = f"/v1/jobs/{job['id']}/stream"
    for headers, code in (({}, 4401), ({"Authorization": f"Bearer {other_user.key}"}, 4404)):
        async with websockets.connect(ws_url(stack, path), additional_headers=headers) as ws:
            problem = json.loads(await ws.recv())
            assert problem["status"] == code - 4000
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == code
            else:
                raise AssertionError("socket stayed open")
    # A key in the query string works for browsers.
    async with websockets.connect(ws_url(stack, f"{path}?access_token={other_user.key}")) as ws:
        assert json.loads(await ws.recv())["code"] == "not_found"
