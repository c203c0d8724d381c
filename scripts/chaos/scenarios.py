"""The reliability scenarios: each breaks one thing under load, then asks the oracle.

    kill-workers      SIGKILL a random worker pool every few seconds (a supervisor starts a new one)
    redis-aof         SIGKILL Redis mid-run and restart it from its AOF
    redis-memory      the same with a memory-only Redis (the reconciler re-sends what was lost)
    postgres-restart  stop PostgreSQL (immediate) mid-run and start it again
    provider-faults   20% of jobs meet a 429, 500, hang, cut stream or malformed chunk on the primary
    ws-reconnects     WebSocket clients dropped and reconnected with `?after=SEQ`, over and over

Each function starts its own stack (`scripts/chaos/stack.py`), takes its size
from a `Size` (full or quick), returns its figures, and raises AssertionError
when a promise was broken. `python -m scripts.chaos` runs them;
`tests/reliability/test_chaos.py` runs the quick sizes.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from jobs.states import TERMINAL_EVENTS, TERMINAL_STATUSES
from scripts.chaos import oracle
from scripts.chaos.load import PROBLEM_JSON, chat, submit_all, unfinished, wait_all_ended
from scripts.chaos.stack import ChaosStack, Timing, chaos_stack

Figures = dict[str, Any]


@dataclass(frozen=True)
class Size:
    """How big a scenario runs: the full figures or the CI subset."""

    jobs: int
    #: kill-workers: seconds between kills, and how many at most (None: until the jobs are done).
    kill_every: float = 10.0
    max_kills: int | None = None
    #: The recovery bound each kill must meet (seconds from SIGKILL to its jobs' completion).
    recovery_bound: float = 15.0
    timing: Timing = field(default_factory=Timing)
    #: redis-*, postgres-restart: how long the server stays down.
    down_seconds: float = 3.0
    #: ws-reconnects: how many drops and reconnections in all.
    reconnects: int = 1000
    #: kill-workers: submissions per second (None: as fast as the API takes them, building a backlog).
    rate: float | None = None


FULL = {
    "kill-workers": Size(jobs=10_000),
    "redis-aof": Size(jobs=2_000, timing=Timing(reconcile_after_seconds=5)),
    "redis-memory": Size(jobs=2_000, timing=Timing(reconcile_after_seconds=5)),
    "postgres-restart": Size(jobs=2_000, down_seconds=5),
    "provider-faults": Size(jobs=2_000),
    "ws-reconnects": Size(jobs=20, reconnects=1000),
}
#: Quick sizes: the same scenarios in about a minute and a half together (tighter timeouts, fewer jobs).
_QUICK_TIMING = Timing(heartbeat_timeout_ms=4_000, lease_seconds=4.0, reconcile_after_seconds=2,
                       maintenance_interval_seconds=0.5, api_db_wait_seconds=2)
QUICK = {
    "kill-workers": Size(jobs=320, kill_every=3, max_kills=2, recovery_bound=10, timing=_QUICK_TIMING,
                         rate=25),
    "redis-aof": Size(jobs=120, down_seconds=1.5, timing=_QUICK_TIMING),
    "redis-memory": Size(jobs=120, down_seconds=1.5, timing=_QUICK_TIMING),
    "postgres-restart": Size(jobs=120, down_seconds=3, timing=_QUICK_TIMING),
    "provider-faults": Size(jobs=150, timing=_QUICK_TIMING),
    "ws-reconnects": Size(jobs=5, reconnects=100, timing=_QUICK_TIMING),
}


def _all_succeeded(report: oracle.Report) -> None:
    others = {s: n for s, n in report.by_status.items() if s != "succeeded"}
    assert not others, f"every job should succeed here; also ended: {others} (failure codes {report.failure_codes})"


# --- (a) kill-workers ----------------------------------------------------------------------------------------------


@dataclass
class _Kill:
    at: float
    jobs: list[str]
    claims: dict[str, int]
    reclaimed: float | None = None
    recovered: float | None = None


def _running_on(stack: ChaosStack, worker_ids: list[str]) -> dict[str, int]:
    """Jobs running under these worker ids, with their claim numbers."""
    with stack.db() as conn:
        rows = conn.execute("SELECT id, attempts FROM jobs WHERE status = 'running' AND worker_id = ANY(%s)",
                            (worker_ids,)).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


def _progress(stack: ChaosStack, kill: _Kill) -> tuple[bool, bool]:
    """(every job of the kill claimed again or ended, every job of the kill ended)."""
    with stack.db() as conn:
        rows = conn.execute("SELECT id, status, attempts FROM jobs WHERE id = ANY(%s::uuid[])",
                            (kill.jobs,)).fetchall()
    ended = [row[1] in TERMINAL_STATUSES for row in rows]
    moved = [done or row[2] > kill.claims[str(row[0])] for row, done in zip(rows, ended, strict=True)]
    return all(moved), all(ended)


async def kill_workers(size: Size) -> Figures:
    """(a) Jobs keep flowing while a random worker pool is SIGKILLed every `kill_every` s and replaced.

    Recovery of a kill: seconds from the SIGKILL until every job that was
    `running` under the killed processes at that instant has ended (succeeded,
    on another worker). `reclaim` is until each was claimed again.
    """
    rng = random.Random(12)
    bodies = [chat(f"[[sim: ttft_ms=150; tps=200]] job {n}", stream=n % 5 == 0) for n in range(size.jobs)]
    with chaos_stack("kill-workers", pools=2, threads=8, timing=size.timing) as stack:
        kills: list[_Kill] = []
        submitted = asyncio.Event()
        started = time.monotonic()
        sub = asyncio.create_task(submit_all(stack.api_url, stack.headers, bodies, concurrency=8, rate=size.rate))
        sub.add_done_callback(lambda _: submitted.set())

        async def supervisor() -> None:
            while size.max_kills is None or len(kills) < size.max_kills:
                # Every `kill_every` s from the previous kill, however long its replacement took to start.
                await asyncio.sleep(max(0.0, (kills[-1].at if kills else started) + size.kill_every - time.monotonic()))
                if submitted.is_set() and sub.exception() is None and \
                        not await asyncio.to_thread(unfinished, stack.database_url, sub.result().accepted):
                    return
                victim = rng.choice(stack.pools)
                at = time.monotonic()
                worker_ids = await asyncio.to_thread(stack.kill_pool, victim)
                running = await asyncio.to_thread(_running_on, stack, worker_ids)
                kills.append(_Kill(at=at, jobs=list(running), claims=running))
                print(f"  kill {len(kills)} at {at - started:.0f}s: {victim.name}, {len(running)} jobs running on it",
                      flush=True)
                await asyncio.to_thread(stack.start_pool, threads=8)

        async def monitor() -> None:
            while True:
                for kill in kills:
                    if kill.recovered is not None:
                        continue
                    moved, ended = await asyncio.to_thread(_progress, stack, kill)
                    now = time.monotonic() - kill.at
                    if moved and kill.reclaimed is None:
                        kill.reclaimed = now
                    if ended:
                        kill.recovered = now
                await asyncio.sleep(0.1)

        watch = asyncio.create_task(monitor())
        await supervisor()
        submissions = await sub
        drained = await wait_all_ended(stack.database_url, submissions.accepted, timeout=600)
        while any(k.recovered is None for k in kills):
            await asyncio.sleep(0.1)
        watch.cancel()
        elapsed = time.monotonic() - started
        recoveries = [k.recovered for k in kills if k.recovered is not None and k.jobs]
        print(f"  {len(kills)} kills, recovery {_spread(recoveries)}", flush=True)
        # A SIGKILL between an ending's commit and its announcement leaves the job in the events' outbox;
        # the maintenance loop announces it (`jobs.lifecycle.announce_missed_ends`): events are required.
        report = oracle.check(stack.database_url, submissions.accepted, redis_url=stack.redis_url,
                              events_required=True)
    _all_succeeded(report)
    slow = [round(r, 1) for r in recoveries if r > size.recovery_bound]
    assert kills, "the jobs ended before any worker was killed: run more jobs"
    assert not slow, f"recoveries over {size.recovery_bound:g} s: {slow}"
    return {
        "jobs": len(submissions.accepted), "seconds": round(elapsed, 1),
        "throughput_jobs_per_s": round(len(submissions.accepted) / elapsed, 1),
        "kills": len(kills), "jobs_running_on_killed_pools": sum(len(k.jobs) for k in kills),
        "recovery_s": _spread(recoveries),
        "reclaim_s": _spread([k.reclaimed for k in kills if k.reclaimed is not None and k.jobs]),
        "drain_after_submissions_s": round(drained, 1),
        "timing": vars(size.timing), "oracle": report.figures(),
    }


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "min": round(min(values), 2)}


# --- (b) Redis killed and restarted -------------------------------------------------------------------------------


async def redis_restart(size: Size, *, aof: bool) -> Figures:
    """(b) Redis SIGKILLed halfway through the submissions, down `down_seconds`, restarted (from its AOF or empty)."""
    name = "redis-aof" if aof else "redis-memory"
    bodies = [chat(f"[[sim: ttft_ms=100; tps=100]] job {n}", stream=n % 2 == 0) for n in range(size.jobs)]
    with chaos_stack(name, pools=1, threads=8, redis_aof=aof, timing=size.timing) as stack:
        half = asyncio.Event()

        def on_accept(n: int) -> None:
            if n == size.jobs // 2:
                half.set()

        # Submitted faster than one pool runs them: a backlog of messages sits in Redis when it dies.
        rate = size.jobs / 3
        sub = asyncio.create_task(submit_all(stack.api_url, stack.headers, bodies, concurrency=8, rate=rate,
                                             on_accept=on_accept))
        await half.wait()
        killed = time.monotonic()
        await asyncio.to_thread(stack.redis.kill)
        await asyncio.sleep(size.down_seconds)
        await asyncio.to_thread(stack.redis.start)
        restarted = time.monotonic()
        submissions = await sub
        drained = await wait_all_ended(stack.database_url, submissions.accepted, timeout=180)
        ended_after_restart = time.monotonic() - restarted
        report = oracle.check(stack.database_url, submissions.accepted, redis_url=stack.redis_url)
        resent = stack.maintenance.log().count("re-sent a job whose message was lost")
    _all_succeeded(report)
    during = [r for r in submissions.refusals if killed <= r.at <= restarted]
    return {
        "jobs": len(submissions.accepted), "aof": aof, "redis_down_s": round(restarted - killed, 1),
        "refusals": submissions.refusal_counts(), "refusals_during_outage": len(during),
        "accepted_after_retries": submissions.retried, "resent_by_reconciler": resent,
        "all_ended_after_restart_s": round(ended_after_restart, 1), "drain_s": round(drained, 1),
        "timing": vars(size.timing), "oracle": report.figures(),
    }


# --- (c) PostgreSQL restarted -------------------------------------------------------------------------------------


async def postgres_restart(size: Size) -> Figures:
    """(c) PostgreSQL stopped (immediate) halfway through; the API answers 503 problem+json, then recovers."""
    bodies = [chat(f"[[sim: ttft_ms=100; tps=100]] job {n}", stream=n % 2 == 0) for n in range(size.jobs)]
    with chaos_stack("postgres-restart", pools=1, threads=8, timing=size.timing) as stack:
        half = asyncio.Event()

        def on_accept(n: int) -> None:
            if n == size.jobs // 2:
                half.set()

        sub = asyncio.create_task(submit_all(stack.api_url, stack.headers, bodies, concurrency=8,
                                             rate=size.jobs / 8, on_accept=on_accept))
        await half.wait()
        stopped = time.monotonic()
        await asyncio.to_thread(stack.stop_postgres)
        async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=60) as client:
            probes = []
            while time.monotonic() - stopped < size.down_seconds:
                t0 = time.monotonic()
                resp = await client.get("/v1/jobs")
                probes.append((resp.status_code, resp.headers.get("content-type", ""), time.monotonic() - t0,
                               resp.headers.get("retry-after")))
                await asyncio.sleep(0.2)
            await asyncio.to_thread(stack.start_postgres)
            restarted = time.monotonic()
            while (await client.get("/v1/jobs")).status_code != 200:
                assert time.monotonic() - restarted < 60, "the API did not recover within 60 s of the restart"
                await asyncio.sleep(0.1)
            api_recovered = time.monotonic() - restarted
        submissions = await sub
        drained = await wait_all_ended(stack.database_url, submissions.accepted, timeout=180)
        ended_after_restart = time.monotonic() - restarted
        report = oracle.check(stack.database_url, submissions.accepted, redis_url=stack.redis_url,
                              events_required=True)
    _all_succeeded(report)
    down = [r for r in submissions.refusals if stopped <= r.at <= restarted]
    not_503 = [f"GET {p[0]} {p[1]}" for p in probes if p[0] != 503 or not p[1].startswith(PROBLEM_JSON)]
    not_503 += [f"POST {r.status} {r.code}" for r in down if r.status != 503 or not r.problem_json]
    assert probes and not not_503, f"while PostgreSQL was down, answers other than 503 problem+json: {not_503[:5]}"
    return {
        "jobs": len(submissions.accepted), "postgres_down_s": round(restarted - stopped, 1),
        "probes_during_outage": len(probes), "probe_503_latency_s": _spread([p[2] for p in probes]),
        "submissions_refused_during_outage": len(down),
        "submission_503_latency_s": _spread([r.seconds for r in down]),
        "refusal_codes": dict(Counter(r.code for r in submissions.refusals)),
        "api_recovered_after_restart_s": round(api_recovered, 2),
        "all_ended_after_restart_s": round(ended_after_restart, 1), "drain_s": round(drained, 1),
        "accepted_after_retries": submissions.retried, "timing": vars(size.timing), "oracle": report.figures(),
    }


# --- (d) provider faults with a fallback route ----------------------------------------------------------------------

_FAULTS = ("429", "500", "hang", "cut", "malformed")


def _fault_body(n: int, rng: random.Random) -> tuple[dict[str, Any], str]:
    """A job on the fallback route; one in five meets a fault on the primary, once (retry) or always (fallback)."""
    stream = n % 2 == 0
    if rng.random() >= 0.2:
        return chat(f"plain job {n}", model="chaos-fallback", stream=stream), "none"
    fault = rng.choice(_FAULTS)
    times = rng.choice((1, 99))
    directive = f"fault={fault}; model=chaos-primary; times={times}; key=job-{n}; retry_after=1; after=2"
    body = chat(f"[[sim: {directive}]] faulty job {n}", model="chaos-fallback", stream=stream)
    return body, f"{fault}/{'once' if times == 1 else 'always'}"


def _charges(stack: ChaosStack, job_ids: list[str]) -> dict[str, int]:
    """Jobs served by each target, and jobs whose charge differs from the usage at the serving target's prices."""
    prices = {"chaos-primary": (100_000, 1_000_000), "chaos-secondary": (200_000, 2_000_000)}
    served: Counter[str] = Counter()
    wrong = 0
    with stack.db() as conn:
        rows = conn.execute(
            """
            SELECT a.model, (j.usage->>'prompt_tokens')::bigint, (j.usage->>'completion_tokens')::bigint,
                   j.charged_credits
            FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.outcome = 'ok'
            WHERE j.id = ANY(%s::uuid[])
            """, (job_ids,)).fetchall()
    for model, prompt, completion, charged in rows:
        served[model] += 1
        input_price, output_price = prices[model]
        wrong += charged != -(-(prompt * input_price + completion * output_price) // 1_000_000)
    return {**{f"served_by_{m}": n for m, n in served.items()}, "charged_not_at_serving_price": wrong}


async def provider_faults(size: Size) -> Figures:
    """(d) 20% of jobs meet a provider fault on the primary; every job ends by retry or fallback, charged once."""
    rng = random.Random(4)
    planned = [_fault_body(n, rng) for n in range(size.jobs)]
    with chaos_stack("provider-faults", pools=1, threads=16, timing=size.timing) as stack:
        started = time.monotonic()
        submissions = await submit_all(stack.api_url, stack.headers, [b for b, _ in planned], concurrency=8)
        await wait_all_ended(stack.database_url, submissions.accepted, timeout=300)
        elapsed = time.monotonic() - started
        report = oracle.check(stack.database_url, submissions.accepted, redis_url=stack.redis_url,
                              events_required=True)
        charges = _charges(stack, submissions.accepted)
        with stack.db() as conn:
            outcomes = dict(conn.execute(
                "SELECT coalesce(error_code, outcome), count(*) FROM job_attempts WHERE job_id = ANY(%s::uuid[])"
                " GROUP BY 1", (submissions.accepted,)).fetchall())
    _all_succeeded(report)
    assert charges["charged_not_at_serving_price"] == 0, charges
    return {
        "jobs": len(submissions.accepted), "seconds": round(elapsed, 1),
        "faults_planned": dict(sorted(Counter(kind for _, kind in planned if kind != "none").items())),
        "provider_call_outcomes": outcomes, **charges, "oracle": report.figures(),
    }


# --- (e) WebSocket clients dropped and reconnected -----------------------------------------------------------------


@dataclass
class _Reader:
    job_id: str
    seqs: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0


async def _read_with_drops(ws_url: str, headers: dict[str, str], reader: _Reader, rng: random.Random,
                           per_connection: int) -> None:
    """Follow one job's stream, dropping the connection after a few events and resuming with `?after=`."""
    terminal = {str(t) for t in TERMINAL_EVENTS}
    while True:
        after = reader.seqs[-1] if reader.seqs else 0
        reader.connections += 1
        budget = rng.randint(1, per_connection)
        async with websockets.connect(f"{ws_url}/v1/jobs/{reader.job_id}/stream?after={after}",
                                      additional_headers=headers) as ws:
            for _ in range(budget):
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                reader.seqs.append(event["seq"])
                reader.events.append(event)
                if event["type"] in terminal:
                    return
            ws.transport.abort()  # dropped, not closed: the server learns it from the socket


async def ws_reconnects(size: Size) -> Figures:
    """(e) `jobs` streaming jobs followed by clients that drop and resume ~`reconnects` times in all."""
    rng = random.Random(5)
    # Each connection reads 1..3 events (2 on average): size the answers so the drops add up.
    tokens = max(10, 2 * size.reconnects // size.jobs)
    # Each answer streams for ~4 s: most drops happen live, the rest after the end (replay only).
    bodies = [chat(f"[[sim: ttft_ms=100; tps={tokens / 4:g}; tokens={tokens}]] stream {n}", stream=True,
                   max_tokens=tokens)
              for n in range(size.jobs)]
    with chaos_stack("ws-reconnects", pools=1, threads=max(8, size.jobs), timing=size.timing) as stack:
        started = time.monotonic()
        submissions = await submit_all(stack.api_url, stack.headers, bodies, concurrency=4)
        readers = [_Reader(job_id) for job_id in submissions.accepted]
        ws_url = stack.api_url.replace("http://", "ws://")
        await asyncio.gather(*(_read_with_drops(ws_url, stack.headers, r, rng, 3) for r in readers))
        elapsed = time.monotonic() - started
        report = oracle.check(stack.database_url, submissions.accepted, redis_url=stack.redis_url,
                              events_required=True)
        async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers) as client:
            results = {r.job_id: (await client.get(f"/v1/jobs/{r.job_id}")).json() for r in readers}
    _all_succeeded(report)
    gaps = dupes = text_mismatch = 0
    for r in readers:
        gaps += len(set(range(1, max(r.seqs) + 1)) - set(r.seqs))
        dupes += len(r.seqs) - len(set(r.seqs))
        last_reset = max((i for i, e in enumerate(r.events) if e["type"] == "reset"), default=-1)
        text = "".join(e["data"]["text"] for e in r.events[last_reset + 1:] if e["type"] == "delta")
        text_mismatch += text != results[r.job_id]["result"]["content"]
    reconnects = sum(r.connections for r in readers) - len(readers)
    assert gaps == dupes == text_mismatch == 0, f"gaps {gaps}, duplicates {dupes}, texts differing {text_mismatch}"
    return {
        "jobs": len(readers), "reconnects": reconnects, "events_received": sum(len(r.seqs) for r in readers),
        "gaps": gaps, "duplicates": dupes, "texts_differing_from_result": text_mismatch,
        "seconds": round(elapsed, 1), "oracle": report.figures(),
    }


SCENARIOS = {
    "kill-workers": kill_workers,
    "redis-aof": lambda size: redis_restart(size, aof=True),
    "redis-memory": lambda size: redis_restart(size, aof=False),
    "postgres-restart": postgres_restart,
    "provider-faults": provider_faults,
    "ws-reconnects": ws_reconnects,
}
