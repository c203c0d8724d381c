"""Benchmark: a big batch from upload to drained, against a same-run baseline of bare COPY + raw sends.

Starts the real stack (embedded PostgreSQL and Redis, the simulator, one API
process, the maintenance loop, a bulk-lane pool and an interactive pool),
generates an N-line chat JSONL and measures, with the unchanged `openai` SDK:

- upload: `files.create` (MB/s);
- create: `batches.create` end to end — read + validate every line,
  reserve once, COPY the line jobs, pipelined enqueue — with the API's own
  phase timings (validate; reserve + COPY; send);
- fan-out: jobs/s of reserve + COPY + send (the part the baseline does);
- drain (after the fan-out rounds, with the worker pools started): lines/s
  until a second batch is `completed` (skip with `--no-drain`), while
  interactive jobs are submitted every 0.5 s and their enqueue → start
  latency is compared with the same jobs on an idle stack.

The baseline, measured in the same run on the same servers: a bare COPY of N
rows of the same shape into a copy of the `jobs` table (same indexes), plus N
raw Dramatiq enqueues (its `dispatch.lua` `enqueue` command, the script
`actor.send()` runs) pipelined 5,000 per round trip.

    .venv/bin/python -m scripts.bench.batch [--lines 100000] [--rounds 3] [--drain-lines 20000] [--no-drain]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import redis
from dramatiq.brokers.redis import RedisBroker
from tqdm import tqdm

from scripts.bench.kit import bench_stack, percentile
from scripts.embedded import free_port
from scripts.procs import start_api, start_maintenance, start_worker

_PHASES = re.compile(r"batch fanned out: (\d+) lines.*validated in ([\d.]+) s, reserved \+ copied in ([\d.]+) s, "
                     r"sent in ([\d.]+) s")


def write_jsonl(path: Path, lines: int) -> int:
    """An N-line chat batch file; returns its size in bytes."""
    with path.open("w") as out:
        for i in range(lines):
            out.write(json.dumps({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": "sim-small", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": f"Bulk prompt number {i}"}]}})
                      + "\n")
    return path.stat().st_size


def baseline(database_url: str, redis_url: str, owner: uuid.UUID, lines: int) -> dict[str, float]:
    """Bare COPY of `lines` job-shaped rows + `lines` raw Dramatiq enqueues, pipelined; seconds each."""
    rows = []
    for i in range(lines):
        body = json.dumps({"model": "sim-small", "messages": [{"role": "user", "content": f"Bulk prompt number {i}"}],
                           "max_tokens": 8, "temperature": None, "stream": False, "fallback": True})
        rows.append(f"{uuid.uuid4()}\t{owner}\tchat.completion\tbaseline\t{body}\t\\N\t5\t10\tbatch_base\tline-{i}\n")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (LIKE jobs INCLUDING ALL)")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(
            "COPY bench_copy (id, owner_id, kind, queue, input, metadata, max_attempts, reserved_credits, "
            "batch_id, custom_id) FROM STDIN"
        ) as copy:
            for start in range(0, lines, 2000):
                copy.write("".join(rows[start:start + 2000]))
        copy_s = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    client = redis.Redis.from_url(redis_url)
    broker = RedisBroker(client=client, namespace="bench-baseline")
    dispatch = broker.scripts["dispatch"]
    message = b'{"queue_name":"baseline","actor_name":"run","args":["x"],"kwargs":{},"options":{}}'
    started = time.perf_counter()
    for start in range(0, lines, 5000):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(start, min(lines, start + 5000)):
                dispatch(keys=["bench-baseline"], args=["enqueue", int(time.time() * 1000), "baseline",
                                                        broker.broker_id, 60_000, 86_400_000, 0, 1000,
                                                        str(uuid.uuid4()), message], client=pipe)
            pipe.execute()
    send_s = time.perf_counter() - started
    for key in client.scan_iter("bench-baseline:*"):
        client.delete(key)
    client.close()
    return {"copy_s": copy_s, "send_s": send_s, "total_s": copy_s + send_s}


async def interactive_waits(api_url: str, key: str, stop: asyncio.Event, every: float = 0.5) -> list[float]:
    """Enqueue → started (ms, from the job's events) of interactive jobs submitted until `stop`."""
    waits: list[float] = []
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        body = {"kind": "chat.completion",
                "input": {"model": "sim-small", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}}
        while not stop.is_set():
            job = (await c.post("/v1/jobs", json=body)).json()
            events = []
            async with c.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        events.append(json.loads(line[5:]))
            at = {e["type"]: e["at"] for e in events}
            waits.append(_ms(at["started"]) - _ms(at["queued"]))
            await asyncio.sleep(every)
    return waits


def _ms(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


async def run_batch(client: openai.AsyncOpenAI, path: Path, drain: bool, api_log: Path,
                    api_url: str, key: str) -> dict[str, Any]:
    """Upload, create and (optionally) drain one batch; returns the figures."""
    size = path.stat().st_size
    started = time.perf_counter()
    uploaded = await client.files.create(file=path, purpose="batch")
    upload_s = time.perf_counter() - started
    started = time.perf_counter()
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    create_s = time.perf_counter() - started
    assert batch.status == "in_progress", batch
    found = None
    for _ in range(50):
        found = [m for m in _PHASES.finditer(api_log.read_text()) if int(m[1]) == batch.request_counts.total]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found, "the API did not log its fan-out phases"
    validate_s, copy_s, send_s = (float(found[-1][i]) for i in (2, 3, 4))
    figures: dict[str, Any] = {"lines": batch.request_counts.total, "bytes": size, "upload_s": upload_s,
                               "create_s": create_s, "validate_s": validate_s, "copy_s": copy_s, "send_s": send_s}
    if not drain:
        await client.batches.cancel(batch.id)
        return figures
    stop = asyncio.Event()
    waiter = asyncio.create_task(interactive_waits(api_url, key, stop))
    started = time.perf_counter()
    with tqdm(total=batch.request_counts.total, desc="drain", unit="line", file=sys.stderr) as bar:
        while True:
            current = await client.batches.retrieve(batch.id)
            counts = current.request_counts
            bar.update(counts.completed + counts.failed - bar.n)
            if current.status in ("completed", "failed", "expired", "cancelled"):
                break
            await asyncio.sleep(0.5)
    figures["drain_s"] = time.perf_counter() - started
    figures["status"] = current.status
    stop.set()
    figures["interactive_ms"] = await waiter
    return figures


async def idle_waits(api_url: str, key: str, count: int = 10) -> list[float]:
    stop = asyncio.Event()
    task = asyncio.create_task(interactive_waits(api_url, key, stop))
    await asyncio.sleep(count * 0.55)
    stop.set()
    return await task


async def bench(args: argparse.Namespace, env: dict[str, str], key: str, owner: uuid.UUID, log_dir: Path) -> None:
    port = free_port()
    api = start_api(env, port, log_dir)
    maintenance = start_maintenance(env, log_dir)
    procs = [maintenance, api]
    api_url = f"http://127.0.0.1:{port}"
    client = openai.AsyncOpenAI(base_url=api_url + "/v1", api_key=key, max_retries=0, timeout=600)
    tmp = Path(tempfile.mkdtemp(prefix="sy-bench-batch-"))
    try:
        print(f"generating {args.lines} lines...", file=sys.stderr)
        big = tmp / "big.jsonl"
        write_jsonl(big, args.lines)
        fanouts: list[dict[str, Any]] = []
        bases: list[dict[str, float]] = []
        for round_ in range(args.rounds):  # interleaved: ours, then the baseline, each round
            print(f"round {round_ + 1}/{args.rounds}: batch of {args.lines}...", file=sys.stderr)
            fanouts.append(await run_batch(client, big, False, api.log_path, api_url, key))
            print(f"round {round_ + 1}/{args.rounds}: baseline...", file=sys.stderr)
            bases.append(baseline(env["DATABASE_URL"], env["REDIS_URL"], owner, args.lines))
        drained = None
        idle: list[float] = []
        if not args.no_drain:
            # The pools start after the fan-out rounds, which measure the API, PostgreSQL and Redis alone.
            procs.insert(0, start_worker(env, log_dir, name="bulk", processes=2, threads=8, queues=["chat.bulk"]))
            procs.insert(0, start_worker(env, log_dir, name="interactive", threads=8, queues=["chat"]))
            idle = await idle_waits(api_url, key)
            small = tmp / "drain.jsonl"
            write_jsonl(small, args.drain_lines)
            drained = await run_batch(client, small, True, api.log_path, api_url, key)
        report(args, fanouts, bases, drained, idle)
    finally:
        await client.close()
        for proc in procs:
            proc.stop()


def report(args: argparse.Namespace, fanouts: list[dict[str, Any]], bases: list[dict[str, float]],
           drained: dict[str, Any] | None, idle: list[float]) -> None:
    """Print the tables (markdown) and, with `--json`, write the figures and targets."""
    med = statistics.median
    n = args.lines
    ours_fanout = [f["copy_s"] + f["send_s"] for f in fanouts]
    base_total = [b["total_s"] for b in bases]
    print(f"\n## Batch fan-out: {n:,} lines (median of {args.rounds} interleaved rounds)\n")
    print("| step | seconds | rate |")
    print("|---|---:|---:|")
    print(f"| upload (`files.create`, {fanouts[0]['bytes'] / 1e6:.1f} MB) | {med(f['upload_s'] for f in fanouts):.2f} "
          f"| {fanouts[0]['bytes'] / 1e6 / med(f['upload_s'] for f in fanouts):.0f} MB/s |")
    print(f"| validate (read + check every line) | {med(f['validate_s'] for f in fanouts):.2f} "
          f"| {n / med(f['validate_s'] for f in fanouts):,.0f} lines/s |")
    print(f"| reserve + COPY line jobs | {med(f['copy_s'] for f in fanouts):.2f} "
          f"| {n / med(f['copy_s'] for f in fanouts):,.0f} rows/s |")
    print(f"| pipelined enqueue | {med(f['send_s'] for f in fanouts):.2f} "
          f"| {n / med(f['send_s'] for f in fanouts):,.0f} msgs/s |")
    print(f"| **fan-out** (reserve + COPY + enqueue) | {med(ours_fanout):.2f} "
          f"| **{n / med(ours_fanout):,.0f} jobs/s** |")
    print(f"| `batches.create` end to end (validate + fan-out) | {med(f['create_s'] for f in fanouts):.2f} "
          f"| {n / med(f['create_s'] for f in fanouts):,.0f} lines/s |")
    print(f"| baseline: bare COPY | {med(b['copy_s'] for b in bases):.2f} "
          f"| {n / med(b['copy_s'] for b in bases):,.0f} rows/s |")
    print(f"| baseline: raw Dramatiq enqueues, pipelined | {med(b['send_s'] for b in bases):.2f} "
          f"| {n / med(b['send_s'] for b in bases):,.0f} msgs/s |")
    print(f"| **baseline** (COPY + enqueues) | {med(base_total):.2f} | **{n / med(base_total):,.0f} jobs/s** |")
    ratio = med(base_total) / med(ours_fanout)
    print(f"\nfan-out / baseline: **{ratio:.2f}×** (target ≥ 0.5; ≥ 20,000 jobs/s)")
    rate = n / med(ours_fanout)
    targets = [{"label": "batch fan-out >= 20,000 jobs/s", "met": rate >= 20_000, "figure": f"{rate:,.0f} jobs/s"},
               {"label": "batch fan-out >= 0.5 x bare COPY + pipelined sends", "met": ratio >= 0.5,
                "figure": f"{ratio:.2f}x of {n / med(base_total):,.0f} jobs/s"}]
    if args.json:
        args.json.write_text(json.dumps({"lines": n, "fanout_jobs_per_s": rate, "baseline_jobs_per_s":
                                         n / med(base_total), "rounds": fanouts, "baselines": bases,
                                         "targets": targets}, indent=2, default=str))
    print("rounds (ours fan-out s / baseline s): " + ", ".join(
        f"{o:.2f}/{b:.2f}" for o, b in zip(ours_fanout, base_total, strict=True)))
    if drained:
        waits = drained["interactive_ms"]
        print(f"\n## Drain: {drained['lines']:,} lines on the bulk pool (2 processes × 8 threads)\n")
        rate = drained["lines"] / drained["drain_s"]
        print(f"{drained['status']} in {drained['drain_s']:.1f} s: {rate:,.0f} lines/s\n")
        print("| interactive jobs (enqueue → started) | n | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        print(f"| idle stack | {len(idle)} | {med(idle):.1f} | {percentile(idle, 99):.1f} | {max(idle):.1f} |")
        print(f"| while the batch drains | {len(waits)} | {med(waits):.1f} | {percentile(waits, 99):.1f} "
              f"| {max(waits):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drain-lines", type=int, default=20_000)
    parser.add_argument("--no-drain", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with bench_stack() as stack:
        asyncio.run(bench(args, stack.env, stack.key, stack.owner, stack.log_dir))


if __name__ == "__main__":
    main()
