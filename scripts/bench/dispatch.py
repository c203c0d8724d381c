"""Benchmark: enqueue → `started` latency on an idle worker pool.

Runs the real stack twice in one go — once with Dramatiq's stock polling
consumer (the baseline, `SWITCHYARD_DISPATCH_WAKEUP=false`) and once with
the wake-up consumer (`jobs/broker.py`) — and prints percentiles and the
ratio. Each job is submitted over HTTP after an idle gap, so the consumer is
asleep in its back-off, as in a quiet interactive deployment. Latency is the
difference between the `queued` event's timestamp (API, after commit) and the
`started` event's (worker, after its claim), both from this machine's clock.

Then, with the wake-up consumer, **under load**: `--load-rate` jobs/s are
submitted for `--load-seconds` by 8 concurrent clients at a steady pace to
the same pool (2 processes × 8 threads, the simulator answering at once), and
the latency is read from the database for every one of them (`started_at -
enqueued_at`, both PostgreSQL's clock).

    .venv/bin/python -m scripts.bench.dispatch [--jobs 40] [--gap 0.6] [--load-rate 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from tqdm import tqdm

from scripts.embedded import free_port, start_postgres, start_redis
from scripts.procs import start_api, start_worker
from scripts.simulator import serve_in_thread


def _at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00")).timestamp()


def measure(env: dict[str, str], jobs: int, gap: float, label: str, log_dir: Path) -> list[float]:
    """Submit `jobs` jobs one at a time after `gap` seconds idle; returns enqueue→started in ms."""
    port = free_port()
    api = start_api(env, port, log_dir, name=f"api-{label}")
    worker = start_worker(env, log_dir, name=f"worker-{label}", threads=8)
    key = env["BENCH_KEY"]
    latencies: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as client:
            body = {"kind": "chat.completion",
                    "input": {"model": "sim-small", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}}
            client.post("/v1/jobs", json=body)  # warm-up: connections, caches
            time.sleep(1)
            for _ in tqdm(range(jobs), desc=label, unit="job", file=sys.stderr):
                time.sleep(gap)
                job = client.post("/v1/jobs", json=body).json()
                events: list[dict[str, object]] = []
                with client.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
                    for line in resp.iter_lines():
                        if line.startswith("data:"):
                            events.append(json.loads(line[5:]))
                by_type = {e["type"]: e for e in events}
                latencies.append((_at(by_type["started"]) - _at(by_type["queued"])) * 1000)
    finally:
        worker.stop()
        api.stop()
    return latencies


def under_load(env: dict[str, str], rate: float, seconds: float, label: str, log_dir: Path) -> list[float]:
    """Jobs submitted at `rate`/s for `seconds` to a busy pool; enqueue → started in ms (database clock)."""
    import psycopg

    from scripts.bench import loadgen

    port = free_port()
    api = start_api(env, port, log_dir, name=f"api-{label}")
    worker = start_worker(env, log_dir, name=f"worker-{label}", processes=2, threads=8)
    url = f"http://127.0.0.1:{port}/v1/jobs"
    body = json.dumps({"kind": "chat.completion", "input": {
        "model": "sim-small", "max_tokens": 1, "messages": [{"role": "user", "content": "under load"}]}}).encode()
    raw = loadgen.request_bytes("POST", url, body, {"Authorization": f"Bearer {env['BENCH_KEY']}"})
    clients, total = 8, int(rate * seconds)

    async def paced() -> None:
        async def one_client(n: int) -> None:
            started = time.perf_counter()
            for i in range(n):  # each client at rate / clients, on a fixed schedule (no coordinated omission)
                await asyncio.sleep(max(0.0, started + i * clients / rate - time.perf_counter()))
                result = await loadgen.run(url, [raw], 1)
                if 202 not in result.statuses:
                    raise RuntimeError(f"submission refused: {result.statuses}")

        await asyncio.gather(*(one_client(total // clients) for _ in range(clients)))

    try:
        asyncio.run(paced())
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM jobs WHERE started_at IS NULL").fetchone() != (0,):
                if time.monotonic() > deadline:
                    raise RuntimeError("jobs still waiting a minute after the load")
                time.sleep(0.2)
            rows = conn.execute("SELECT extract(epoch FROM started_at - enqueued_at) * 1000 FROM jobs "
                                "WHERE input->'messages'->0->>'content' = 'under load'").fetchall()
            conn.execute("DELETE FROM jobs")
    finally:
        worker.stop()
        api.stop()
    return [float(r[0]) for r in rows]


def _summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values), "p90": q[89], "p99": q[98], "max": max(values)}


def main() -> None:
    """Run both configurations and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.6, help="idle seconds before each job")
    parser.add_argument("--load-rate", type=float, default=200, help="jobs/s of the under-load phase (0: skip)")
    parser.add_argument("--load-seconds", type=float, default=15)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    from jobs.db import migrate
    from tests.conftest import make_user

    tmp = Path(tempfile.mkdtemp(prefix="sy-bench-"))
    db_url, stop_pg = start_postgres(tmp / "pg")
    redis_url, redis_proc = start_redis(None)
    migrate(db_url)
    user = asyncio.run(make_user(db_url))
    try:
        with serve_in_thread() as sim_url:
            base = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "SIMULATOR_URL": sim_url,
                    "BENCH_KEY": user.key, "LOG_LEVEL": "INFO",
                    "SWITCHYARD_RATE_LIMIT_RPM_FREE": "1000000", "SWITCHYARD_MAX_CONCURRENT_JOBS_FREE": "1000000"}
            results = {}
            for label, wakeup in (("baseline-polling", "false"), ("wakeup", "true")):
                results[label] = _summary(measure({**base, "SWITCHYARD_DISPATCH_WAKEUP": wakeup},
                                                  args.jobs, args.gap, label, tmp))
            if args.load_rate:
                loaded = under_load(base, args.load_rate, args.load_seconds, "load", tmp)
                results[f"wakeup, under load ({args.load_rate:g} jobs/s, n={len(loaded)})"] = _summary(loaded)
    finally:
        redis_proc.terminate()
        stop_pg()
    print(f"\nenqueue -> started, idle pool, {args.jobs} jobs, {args.gap}s idle before each (ms)")
    print(f"{'consumer':<18}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, s in results.items():
        print(f"{label:<18}{s['p50']:>9.2f}{s['p90']:>9.2f}{s['p99']:>9.2f}{s['max']:>9.2f}")
    base_p50, wake_p50 = results["baseline-polling"]["p50"], results["wakeup"]["p50"]
    print(f"p50 speed-up: {base_p50 / wake_p50:.1f}x")
    targets = [{"label": "dispatch p50 < 10 ms (idle pool)", "met": wake_p50 < 10, "figure": f"{wake_p50:.1f} ms"}]
    loaded_p50 = [s["p50"] for label, s in results.items() if "under load" in label]
    if loaded_p50:
        targets.append({"label": f"dispatch p50 < 10 ms (under load, {args.load_rate:g} jobs/s)",
                        "met": loaded_p50[0] < 10, "figure": f"{loaded_p50[0]:.1f} ms"})
    for t in targets:
        print(f"target {t['label']}: {'MET' if t['met'] else 'MISSED'} ({t['figure']})")
    if args.json:
        args.json.write_text(json.dumps({"summary": results, "targets": targets}, indent=2))


if __name__ == "__main__":
    main()
