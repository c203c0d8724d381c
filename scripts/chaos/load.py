"""Client side of the chaos scenarios: submit jobs as a patient client does, wait for them to end.

A submission carries an `Idempotency-Key` and is retried with the same key on
a 5xx, a 429 or a broken connection until it gets its 202 — so "accepted" is
exactly the set of jobs the platform promised to run, and an outage costs a
client retries, never a duplicate job. Every answer that was not a 202 is
tallied (status, whether it was problem+json, how long it took).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from jobs.states import TERMINAL_STATUSES

PROBLEM_JSON = "application/problem+json"


def chat(content: str, *, model: str = "chaos-small", stream: bool = False, max_tokens: int = 32) -> dict[str, Any]:
    """A chat.completion job body."""
    return {"kind": "chat.completion", "input": {"model": model, "stream": stream, "max_tokens": max_tokens,
                                                 "messages": [{"role": "user", "content": content}]}}


@dataclass
class Refusal:
    """An answer other than 202 (or no answer at all) to a submission."""

    at: float
    status: int | None
    problem_json: bool
    seconds: float
    code: str = ""


@dataclass
class Submissions:
    """What a client saw while submitting."""

    accepted: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    #: Submissions that got their 202 only after one or more refusals.
    retried: int = 0
    #: Monotonic time of each 202, in order.
    accepted_at: list[float] = field(default_factory=list)

    def refusal_counts(self) -> dict[str, int]:
        return dict(Counter(str(r.status or "no answer") for r in self.refusals))


async def submit_one(client: httpx.AsyncClient, body: dict[str, Any], out: Submissions, *,
                     deadline: float) -> str:
    """POST one job until it is accepted (same Idempotency-Key each time); returns its id."""
    key = uuid.uuid4().hex
    refused = False
    while True:
        started = time.monotonic()
        try:
            resp = await client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            out.refusals.append(Refusal(at=started, status=None, problem_json=False,
                                        seconds=time.monotonic() - started))
        else:
            if resp.status_code == 202:
                out.retried += refused
                job_id: str = resp.json()["id"]
                out.accepted.append(job_id)
                out.accepted_at.append(time.monotonic())
                return job_id
            problem = resp.headers.get("content-type", "").startswith(PROBLEM_JSON)
            code = resp.json().get("code", "") if problem else ""
            out.refusals.append(Refusal(at=started, status=resp.status_code, problem_json=problem,
                                        seconds=time.monotonic() - started, code=code))
            if resp.status_code < 500 and resp.status_code != 429:
                raise AssertionError(f"submission refused for good: {resp.status_code} {resp.text}")
        refused = True
        if time.monotonic() > deadline:
            raise AssertionError(f"a job was not accepted within the deadline; refusals: {out.refusal_counts()}")
        await asyncio.sleep(0.2)


async def submit_all(api_url: str, headers: dict[str, str], bodies: list[dict[str, Any]], *,
                     concurrency: int = 16, rate: float | None = None, timeout: float = 600,
                     on_accept: Callable[[int], None] | None = None) -> Submissions:
    """Submit every body (at most `rate` per second, when given) with `concurrency` clients in flight."""
    out = Submissions()
    deadline = time.monotonic() + timeout
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    start = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=60, limits=limits) as client:

        async def one_client() -> None:
            while not queue.empty():
                n, body = queue.get_nowait()
                if rate:
                    await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                await submit_one(client, body, out, deadline=deadline)
                if on_accept:
                    on_accept(len(out.accepted))

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return out


def unfinished(database_url: str, job_ids: list[str]) -> int:
    """How many of the jobs are not in a terminal state yet."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[]) AND NOT status = ANY(%s)",
                           (job_ids, list(TERMINAL_STATUSES))).fetchone()
    return int(row[0]) if row else 0


async def wait_all_ended(database_url: str, job_ids: list[str], timeout: float) -> float:
    """Wait until every job is terminal; returns the seconds waited (AssertionError past `timeout`)."""
    start = time.monotonic()
    while (left := await asyncio.to_thread(unfinished, database_url, job_ids)) > 0:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{left} of {len(job_ids)} accepted jobs still unfinished after {timeout:.0f} s")
        await asyncio.sleep(0.5)
    return time.monotonic() - start
