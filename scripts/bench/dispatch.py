"""Benchmark: enqueue → `started` latency on an idle worker pool.

Runs the real stack twice in one go — once with Dramatiq's stock polling
consumer (the baseline, `SWITCHYARD_DISPATCH_WAKEUP=false`) and once with
the wake-up consumer (`jobs/broker.py`) — and prints percentiles and the
ratio. Each job is submitted over HTTP after an idle gap, so the consumer is
asleep in its back-off, as in a quiet interactive deployment. Latency is the
difference between the `queued` event's timestamp (API, after commit) and the
`started` event's (worker, after its claim), both from this machine's clock.

    .venv/bin/python -m scripts.bench.dispatch [--jobs 40] [--gap 0.6]
"""

from __future__ import annotations

import argparse
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
                    import json

                    for line in resp.iter_lines():
                        if line.startswith("data:"):
                            events.append(json.loads(line[5:]))
                by_type = {e["type"]: e for e in events}
                latencies.append((_at(by_type["started"]) - _at(by_type["queued"])) * 1000)
    finally:
        worker.stop()
        api.stop()
    return latencies


def _summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": statistics.median(values), "p90": q[89], "p99": q[98], "max": max(values)}


def main() -> None:
    """Run both configurations and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.6, help="idle seconds before each job")
    args = parser.parse_args()

    import asyncio

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
                    "BENCH_KEY": user.key, "LOG_LEVEL": "INFO"}
            results = {}
            for label, wakeup in (("baseline-polling", "false"), ("wakeup", "true")):
                results[label] = _summary(measure({**base, "SWITCHYARD_DISPATCH_WAKEUP": wakeup},
                                                  args.jobs, args.gap, label, tmp))
    finally:
        redis_proc.terminate()
        stop_pg()
    print(f"\nenqueue -> started, idle pool, {args.jobs} jobs, {args.gap}s idle before each (ms)")
    print(f"{'consumer':<18}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, s in results.items():
        print(f"{label:<18}{s['p50']:>9.2f}{s['p90']:>9.2f}{s['p99']:>9.2f}{s['max']:>9.2f}")
    base_p50, wake_p50 = results["baseline-polling"]["p50"], results["wakeup"]["p50"]
    print(f"p50 speed-up: {base_p50 / wake_p50:.1f}x")


if __name__ == "__main__":
    main()
