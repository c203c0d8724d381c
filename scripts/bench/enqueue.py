"""Benchmark: how fast jobs are accepted — `POST /v1/jobs` vs raw Dramatiq `send()` vs Redis LPUSH.

All in one run, on one machine, interleaved round by round (medians of the rounds):

- **redis LPUSH**: `redis-benchmark -t lpush -c 1 -P 1` (one client, sequential; the floor of any
  Redis queue), and the same from Python (`redis-py`, one LPUSH per call);
- **raw Dramatiq**: a stock `RedisBroker` and `actor.send()` in a loop (one client, sequential) — what
  the issue calls the raw send rate;
- **Switchyard, one client**: `POST /v1/jobs` one at a time on a keep-alive connection (validate,
  authenticate, rate-limit, reserve credits, INSERT + COMMIT, `queued` event, send);
- **Switchyard, 50 clients of one user** and **50 clients of 50 users**: the same requests over 50
  connections — the second shows what one user's reservations cost when they share one account.

No worker runs: accepted jobs wait in their queue, so only acceptance is measured.

    .venv/bin/python -m scripts.bench.enqueue [--rounds 3] [--jobs 3000] [--api-workers 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from scripts.bench import loadgen
from scripts.bench.kit import bench_stack, new_user, percentile
from scripts.embedded import free_port
from scripts.procs import start_api

BODY = json.dumps({"kind": "chat.completion", "input": {
    "model": "sim-small", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hi"}]}}).encode()
USERS = 50
CONCURRENCY = 50


def raw_dramatiq(redis_url: str, n: int) -> float:
    """Stock Dramatiq: `actor.send()` n times in a row; messages/s."""
    broker = RedisBroker(url=redis_url, namespace="bench-raw")

    @dramatiq.actor(broker=broker, queue_name="raw", actor_name="raw_bench")
    def raw_bench(i: int) -> None: ...

    raw_bench.send(0)  # connect
    started = time.perf_counter()
    for i in range(n):
        raw_bench.send(i)
    rate = n / (time.perf_counter() - started)
    broker.flush_all()
    broker.close()
    return rate


def redis_py_lpush(redis_url: str, n: int) -> float:
    """One LPUSH per call from Python, sequential; pushes/s."""
    client = redis.Redis.from_url(redis_url)
    payload = BODY
    started = time.perf_counter()
    for _ in range(n):
        client.lpush("bench:lpush", payload)
    rate = n / (time.perf_counter() - started)
    client.delete("bench:lpush")
    client.close()
    return rate


def redis_benchmark(redis_url: str, n: int) -> float | None:
    """`redis-benchmark -t lpush -c 1 -P 1` (Debian's redis-tools); None if it is not installed."""
    if not shutil.which("redis-benchmark"):
        return None
    port = urlsplit(redis_url).port or 6379
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "lpush", "-n", str(n), "-c", "1", "-P", "1",
                          "-d", str(len(BODY)), "--csv"], capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith('"LPUSH"'))
    return float(row.split(",")[1].strip('"'))


def ours(api_url: str, keys: list[str], n: int, concurrency: int) -> loadgen.Result:
    """`n` POST /v1/jobs over `concurrency` connections, the keys taken in turn."""
    url = f"{api_url}/v1/jobs"
    raws = [loadgen.request_bytes("POST", url, BODY, {"Authorization": f"Bearer {keys[i % len(keys)]}"})
            for i in range(n)]
    return asyncio.run(loadgen.run(url, raws, concurrency))


def _summary(result: loadgen.Result) -> dict[str, Any]:
    ms = [x * 1000 for x in result.latencies]
    return {"rate": result.rate, "p50_ms": statistics.median(ms), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms), "statuses": result.statuses}


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn processes of the API")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    results: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "redis_benchmark_lpush", "redis_py_lpush", "dramatiq_send", "ours_sequential", "ours_one_user_c50",
        "ours_many_users_c50")}
    with bench_stack() as stack:
        keys = [stack.key] + [asyncio.run(new_user(stack.env["DATABASE_URL"]))[0] for _ in range(USERS - 1)]
        port = free_port()
        api = start_api(stack.env, port, stack.log_dir, workers=args.api_workers)
        api_url = f"http://127.0.0.1:{port}"
        redis_url = stack.env["REDIS_URL"]
        try:
            ours(api_url, keys, 500, CONCURRENCY)  # warm-up: connections, caches, JIT-free but page-cache warm
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
                lp = redis_benchmark(redis_url, args.jobs * 5)
                if lp is not None:
                    results["redis_benchmark_lpush"].append({"rate": lp})
                results["redis_py_lpush"].append({"rate": redis_py_lpush(redis_url, args.jobs)})
                results["dramatiq_send"].append({"rate": raw_dramatiq(redis_url, args.jobs)})
                results["ours_sequential"].append(_summary(ours(api_url, keys[:1], args.jobs // 3, 1)))
                results["ours_one_user_c50"].append(_summary(ours(api_url, keys[:1], args.jobs, CONCURRENCY)))
                results["ours_many_users_c50"].append(_summary(ours(api_url, keys, args.jobs, CONCURRENCY)))
        finally:
            api.stop()

    summary = {name: {k: _median(rs, k) for k in rs[0] if k != "statuses"} | {
        "statuses": [r.get("statuses") for r in rs]} for name, rs in results.items() if rs}
    raw = summary["dramatiq_send"]["rate"]
    best = max(summary["ours_one_user_c50"]["rate"], summary["ours_many_users_c50"]["rate"])
    labels = {"redis_benchmark_lpush": "redis-benchmark LPUSH (1 client, sequential)",
              "redis_py_lpush": "redis-py LPUSH (1 client, sequential)",
              "dramatiq_send": "**raw Dramatiq `actor.send()`** (1 client, sequential)",
              "ours_sequential": "Switchyard `POST /v1/jobs` (1 client, sequential)",
              "ours_one_user_c50": "Switchyard `POST /v1/jobs`, 50 clients of **one user**",
              "ours_many_users_c50": "Switchyard `POST /v1/jobs`, 50 clients of 50 users"}
    print(f"\nAccepted per second, medians of {args.rounds} interleaved rounds of {args.jobs:,} requests "
          f"(API: {args.api_workers} uvicorn processes; no worker running)\n")
    print("| sender | per s | p50 ms | p99 ms | max ms | × raw send |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in summary.items():
        lat = " | ".join(f"{s[k]:.2f}" if k in s else "" for k in ("p50_ms", "p99_ms", "max_ms"))
        print(f"| {labels[name]} | {s['rate']:,.0f} | {lat} | {s['rate'] / raw:.2f} |")
    one, many = summary["ours_one_user_c50"], summary["ours_many_users_c50"]
    print(f"\nOne user at c=50 / 50 users at c=50: **{one['rate'] / many['rate']:.2f}×**\n")
    targets = [
        ("accepted jobs/s >= 3000", best >= 3000, f"{best:.0f}/s"),
        ("accepted jobs/s >= 0.6 x raw Dramatiq send", best >= 0.6 * raw, f"{best / raw:.2f}x of {raw:.0f}/s"),
        ("p99 accept latency < 50 ms (c=50, one user)", one["p99_ms"] < 50, f"{one['p99_ms']:.1f} ms"),
    ]
    for label, met, figure in targets:
        print(f"- target {label}: {'MET' if met else 'MISSED'} ({figure})")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": results, "jobs": args.jobs,
                                         "api_workers": args.api_workers,
                                         "targets": [{"label": t[0], "met": t[1], "figure": t[2]} for t in targets]},
                                        indent=2))


if __name__ == "__main__":
    main()
