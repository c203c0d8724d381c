"""Benchmark: WebSocket fan-out — N concurrent clients on ONE API process receiving streamed jobs.

Scenario: `--jobs` streaming `chat.completion` jobs (simulator directive
`[[sim: ttft_ms=…; tps=…; tokens=…]]`, each job's TTFT jittered by up to one
token interval so the jobs do not tick in lock-step) are submitted while no
worker runs. `--clients` WebSocket clients (default 2,000, spread over
`--client-procs` processes, `websockets` on uvloop) then connect to
`/v1/jobs/{id}/stream` of one API process (`switchyard api`: one uvicorn
process), `clients / jobs` per job, authenticated with the `Authorization`
header. Once every client is connected the API's RSS is read again (memory per
connection = RSS after − RSS before, ÷ clients; before = after one warm-up
connection) and its idle CPU with every client connected is sampled; then a
worker (1 process, `--jobs` threads) starts and runs the jobs, every token a
`delta` event published on Redis pub/sub (jobs/events.py) and fanned out by
the API to its subscribers.

Delivery lag, per delivered `delta` frame: the client's wall clock when
`recv()` hands it the frame minus the event's `at` (stamped by the worker just
before the publish script runs) — same machine, same clock. It covers worker →
Redis → API (channels plugin, per-subscriber queue, decode/encode, uvicorn
send) → loopback → client parsing, and any wait for a CPU: the machine's two
cores are shared by the API, the worker, Redis, the simulator and the clients.

Baseline, same run, same client code: a bare broadcaster (this file,
`--baseline-server`): one process on uvloop, one Redis pub/sub pattern
subscription, `websockets.broadcast()` of each raw message to the sockets of
its job; no auth, no replay, no per-subscriber ordering — the floor of Redis
pub/sub → N sockets in one Python process. It gets a fresh set of identical
jobs and the same worker.

    .venv/bin/python -m scripts.bench.fanout [--clients 2000] [--jobs 20] [--tps 10] [--tokens 60] [--json PATH]
    .venv/bin/python -m scripts.bench.fanout --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
#: The p99 delivery lag the issue asks for (ms).
TARGET_P99_MS = 50.0
TERMINAL = ('"type":"succeeded"', '"type":"failed"', '"type":"cancelled"')


def raise_nofile() -> int:
    """Lift this process's soft descriptor limit to the hard one (inherited by children); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# Client process (`--client`): reads a spec on stdin, reports progress on stdout, writes its result to a file


async def _clients(spec: dict[str, Any]) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    paths: list[str] = spec["paths"]
    headers = {"Authorization": f"Bearer {spec['key']}"}
    frames: list[list[tuple[float, str]]] = [[] for _ in paths]
    closes: list[int | None] = [None] * len(paths)
    errors: list[str] = []
    connect_ms: list[float] = []
    gate = asyncio.Semaphore(spec["parallel"])
    settled = 0
    all_settled = asyncio.Event()

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled % 50 == 0 or settled == len(paths):
            print(f"C {settled}", flush=True)
        if settled == len(paths):
            all_settled.set()

    async def one(i: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            try:
                ws = await connect(spec["url"] + paths[i], additional_headers=headers, open_timeout=120,
                                   ping_interval=None, max_size=None, compression=None)
            except Exception as exc:
                errors.append(f"connect: {exc!r}")
                settle()
                return
            connect_ms.append((time.perf_counter() - t0) * 1000)
        settle()
        out = frames[i]
        try:
            async for message in ws:
                out.append((time.time(), message))  # type: ignore[arg-type]
        except ConnectionClosed as exc:
            errors.append(f"closed: {exc!r}")
        closes[i] = ws.close_code

    tasks = [asyncio.create_task(one(i)) for i in range(len(paths))]
    await all_settled.wait()
    print("READY", flush=True)
    cpu0 = os.times()
    _done, pending = await asyncio.wait(tasks, timeout=spec["timeout"])
    cpu1 = os.times()
    for task in pending:
        task.cancel()
    return _client_result(spec, frames, closes, errors, connect_ms, len(pending),
                          (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))


def _client_result(spec: dict[str, Any], frames: list[list[tuple[float, str]]], closes: list[int | None],
                   errors: list[str], connect_ms: list[float], unfinished: int, cpu_s: float) -> dict[str, Any]:
    """Lags of delta frames and per-client checks, computed after the run (off the clock)."""
    lags: list[float] = []
    deltas: list[int] = []
    first_t, last_t = float("inf"), 0.0
    out_of_order = incomplete = 0
    for received in frames:
        seqs, n = [], 0
        for t, raw in received:
            event = json.loads(raw)
            seqs.append(event["seq"])
            if event["type"] == "delta":
                n += 1
                lags.append(round((t - _at(event["at"])) * 1000, 3))
                first_t, last_t = min(first_t, t), max(last_t, t)
        deltas.append(n)
        # The API replays from seq 1; the baseline starts wherever the client joined the live channel.
        first = 1 if spec["replayed"] else (seqs[0] if seqs else 1)
        if seqs != list(range(first, first + len(seqs))):
            out_of_order += 1
        if not received or not any(m in received[-1][1] for m in TERMINAL):
            incomplete += 1
    return {"lags_ms": lags, "deltas": deltas, "out_of_order": out_of_order, "incomplete": incomplete,
            "close_codes": sorted({c for c in closes if c is not None}), "errors": len(errors),
            "first_error": errors[0] if errors else None, "connect_ms": connect_ms, "unfinished": unfinished,
            "cpu_s": cpu_s, "first_delta_t": first_t if lags else None, "last_delta_t": last_t if lags else None}


def client_main() -> None:
    raise_nofile()
    import uvloop

    spec = json.loads(sys.stdin.readline())
    result = uvloop.run(_clients(spec))
    Path(spec["result_path"]).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# Baseline server (`--baseline-server`): Redis pub/sub → websockets.broadcast, nothing else


async def _baseline(port: int, redis_url: str) -> None:
    import redis.asyncio as aioredis
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    rooms: dict[str, set[ServerConnection]] = defaultdict(set)
    closing: set[asyncio.Task[None]] = set()  # references, so the close tasks are not collected mid-way

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        job_id = ws.request.path.split("/")[3]  # /v1/jobs/{id}/stream
        room = rooms[f"sy:job:{job_id}"]
        room.add(ws)
        try:
            await ws.wait_closed()
        finally:
            room.discard(ws)

    async def pump() -> None:
        client = aioredis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.psubscribe("sy:job:*")
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            room = rooms.get(message["channel"].decode())
            if not room:
                continue
            text = message["data"].decode()
            broadcast(room, text)
            if any(m in text for m in TERMINAL):
                closing.update(asyncio.create_task(ws.close()) for ws in list(room))

    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_size=None, compression=None):
        print("baseline ready", flush=True)
        await pump()


def baseline_main(port: int) -> None:
    raise_nofile()
    import uvloop

    uvloop.run(_baseline(port, os.environ["REDIS_URL"]))


# ---------------------------------------------------------------------------------------------
# The run


def submit_jobs(api_url: str, key: str, count: int, args: argparse.Namespace) -> list[str]:
    """`count` streaming chat jobs, each with its TTFT jittered by up to one token interval."""
    import httpx

    ids = []
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for i in range(count):
            ttft = args.ttft_ms + random.uniform(0, 1000 / args.tps)
            prompt = f"[[sim: ttft_ms={ttft:.0f}; tps={args.tps:g}; tokens={args.tokens}]] fan-out job {i}"
            body = {"kind": "chat.completion",
                    "input": {"model": "sim-small", "stream": True, "messages": [{"role": "user", "content": prompt}]}}
            resp = client.post("/v1/jobs", json=body)
            resp.raise_for_status()
            ids.append(resp.json()["id"])
    return ids


class CpuSampler(threading.Thread):
    """CPU seconds of a process and of the machine every 50 ms, so a window can be cut out afterwards."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float, float]] = []  # wall clock, process CPU, machine busy
        self._halt = threading.Event()

    def run(self) -> None:
        from scripts.bench.streams import machine_busy, proc_cpu

        while not self._halt.wait(0.05):
            try:
                self.samples.append((time.time(), proc_cpu(self.pid), machine_busy()))
            except OSError:
                return

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def window(self, start: float, end: float) -> tuple[float, float, float]:
        """(wall, process CPU, machine busy) seconds between the samples around [start, end]."""
        inside = [s for s in self.samples if start - 0.05 <= s[0] <= end + 0.05] or self.samples[-2:]
        a, b = inside[0], inside[-1]
        return b[0] - a[0], b[1] - a[1], b[2] - a[2]


class ClientProc:
    """One client process: its progress lines feed a shared counter; its result arrives last."""

    def __init__(self, spec: dict[str, Any], log_dir: Path, name: str, progress: Any) -> None:
        self.result_path = log_dir / f"{name}.json"
        spec = {**spec, "result_path": str(self.result_path)}
        self.stderr = (log_dir / f"{name}.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "scripts.bench.fanout", "--client"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        self.ready = threading.Event()
        self._seen = 0
        self._progress = progress
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("C "):
                n = int(line[2:])
                self._progress.update(n - self._seen)
                self._seen = n
            elif line.startswith("READY"):
                self.ready.set()
        self.ready.set()

    def wait(self, timeout: float) -> dict[str, Any]:
        self.proc.wait(timeout)
        self._reader.join(10)
        self.stderr.close()
        if not self.result_path.exists():
            raise RuntimeError(f"client process exited {self.proc.returncode} without a result (see its log)")
        result: dict[str, Any] = json.loads(self.result_path.read_text())
        return result


def _warm_up(ws_url: str, key: str) -> None:
    """One connection and a frame, so lazy imports and first-use caches are not counted per connection."""
    from websockets.sync.client import connect

    with connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=30) as ws:
        ws.recv(timeout=30)


def run_phase(name: str, server_pid: int, ws_base: str, api_url: str, stack: Any,
              args: argparse.Namespace) -> dict[str, Any]:
    """Connect the clients to one server, then run the jobs; lags, memory and CPU of the server."""
    from tqdm import tqdm

    from scripts.bench.streams import proc_cpu, proc_status
    from scripts.procs import start_worker

    ids = submit_jobs(api_url, stack.key, args.jobs, args)
    replayed = name == "switchyard"
    if replayed:
        _warm_up(f"{ws_base}/v1/jobs/{ids[0]}/stream", stack.key)
    time.sleep(1)
    rss_before = proc_status(server_pid).get("VmRSS", 0)
    paths = [f"/v1/jobs/{ids[i % args.jobs]}/stream" for i in range(args.clients)]
    shares = [paths[p::args.client_procs] for p in range(args.client_procs)]
    timeout = 120 + 5 * (args.ttft_ms / 1000 + args.tokens / args.tps)
    t_connect = time.monotonic()
    with tqdm(total=args.clients, desc=f"{name}: connecting", unit="client", file=sys.stderr) as bar:
        procs = [ClientProc({"url": ws_base, "key": stack.key, "paths": share, "parallel": args.parallel,
                             "timeout": timeout, "replayed": replayed}, stack.log_dir, f"clients-{name}-{p}", bar)
                 for p, share in enumerate(shares)]
        for proc in procs:
            proc.ready.wait(timeout)
    connect_s = time.monotonic() - t_connect
    time.sleep(2)  # let the connection burst's garbage settle
    rss_after = proc_status(server_pid).get("VmRSS", 0)
    cpu0, w0 = proc_cpu(server_pid), time.monotonic()
    time.sleep(args.idle_seconds)
    idle_cores = (proc_cpu(server_pid) - cpu0) / (time.monotonic() - w0)

    print(f"{name}: {args.clients} clients connected in {connect_s:.1f} s; starting the worker "
          f"(server pid {server_pid})", file=sys.stderr)
    sampler = CpuSampler(server_pid)
    sampler.start()
    worker = start_worker(stack.env, stack.log_dir, name=f"worker-{name}", threads=args.jobs, queues=["chat"])
    try:
        results = [proc.wait(timeout) for proc in procs]
        hwm = proc_status(server_pid).get("VmHWM", 0)
    finally:
        sampler.stop()
        worker.stop()
    # The streaming window: first to last delta frame received by any client.
    starts = [r["first_delta_t"] for r in results if r["first_delta_t"]]
    ends = [r["last_delta_t"] for r in results if r["last_delta_t"]]
    wall, cpu, busy = sampler.window(min(starts), max(ends)) if starts else (float("nan"),) * 3
    return _phase_summary(name, results, args, rss_before, rss_after, hwm, idle_cores, connect_s, wall, cpu, busy,
                          expected_deltas(stack.env["REDIS_URL"], ids))


def expected_deltas(redis_url: str, ids: list[str]) -> dict[str, int]:
    """Delta events per job in its replay stream (the source of truth)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        counts = {}
        for job_id in ids:
            entries: list[Any] = client.xrange(f"sy:{{{job_id}}}:events") or []
            counts[job_id] = sum(1 for _, fields in entries if b'"type":"delta"' in fields[b"e"])
        return counts
    finally:
        client.close()


def _phase_summary(name: str, results: list[dict[str, Any]], args: argparse.Namespace, rss_before: int,
                   rss_after: int, hwm: int, idle_cores: float, connect_s: float, wall: float, cpu: float,
                   busy: float, expected: dict[str, int]) -> dict[str, Any]:
    from scripts.bench.kit import percentile

    lags = sorted(lag for r in results for lag in r["lags_ms"])
    connect_ms = [ms for r in results for ms in r["connect_ms"]]
    frames = len(lags)
    want = sum(expected.values()) * args.clients // args.jobs
    return {
        "server": name, "clients": args.clients,
        "connected": len(connect_ms), "connect_s": connect_s,
        "connect_p50_ms": percentile(connect_ms, 50), "connect_p99_ms": percentile(connect_ms, 99),
        "delta_frames": frames, "expected_delta_frames": want,
        "lag_p50_ms": percentile(lags, 50), "lag_p90_ms": percentile(lags, 90),
        "lag_p99_ms": percentile(lags, 99), "lag_max_ms": lags[-1] if lags else float("nan"),
        "rss_before_mb": rss_before / 1024, "rss_after_mb": rss_after / 1024, "peak_rss_mb": hwm / 1024,
        "kb_per_connection": (rss_after - rss_before) / max(1, len(connect_ms)),
        "idle_cores_connected": idle_cores,
        "stream_wall_s": wall, "server_cpu_s": cpu, "server_cores": cpu / wall,
        "server_cpu_us_per_frame": cpu / frames * 1e6 if frames else float("nan"),
        "frames_per_s": frames / wall, "machine_busy_cores": busy / wall,
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "out_of_order_clients": sum(r["out_of_order"] for r in results),
        "incomplete_clients": sum(r["incomplete"] for r in results),
        "unfinished_clients": sum(r["unfinished"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        "close_codes": sorted({c for r in results for c in r["close_codes"]}),
    }


def bench(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from scripts.bench.kit import bench_stack
    from scripts.embedded import free_port
    from scripts.procs import Process, start_api, wait_log

    runs: dict[str, dict[str, Any]] = {}
    # One Dramatiq thread per job; the worker's PostgreSQL pool is sized from this setting.
    with bench_stack(SWITCHYARD_WORKER_THREADS=str(max(8, args.jobs))) as stack:
        port = free_port()
        api = start_api(stack.env, port, stack.log_dir)
        api_url = f"http://127.0.0.1:{port}"
        try:
            for server in args.servers:
                if server == "switchyard":
                    runs[server] = run_phase(server, api.pid, f"ws://127.0.0.1:{port}", api_url, stack, args)
                else:
                    bport = free_port()
                    base = Process("baseline", [sys.executable, "-m", "scripts.bench.fanout", "--baseline-server",
                                                "--port", str(bport)], stack.env, stack.log_dir)
                    try:
                        wait_log(base, "baseline ready")
                        runs[server] = run_phase(server, base.pid, f"ws://127.0.0.1:{bport}", api_url, stack, args)
                    finally:
                        base.stop()
                time.sleep(1)
        finally:
            api.stop()
    return runs


# ---------------------------------------------------------------------------------------------
# Report

ROWS: list[tuple[str, str | tuple[str, ...], str]] = [
    ("clients connected", "connected", "{:.0f}"),
    ("connect time, all clients (s)", "connect_s", "{:.1f}"),
    ("handshake p50 / p99 (ms)", ("connect_p50_ms", "connect_p99_ms"), "{:.0f} / {:.0f}"),
    ("delta frames delivered / expected", ("delta_frames", "expected_delta_frames"), "{:,} / {:,}"),
    ("delivery lag p50 (ms)", "lag_p50_ms", "{:.1f}"),
    ("delivery lag p90 (ms)", "lag_p90_ms", "{:.1f}"),
    ("delivery lag p99 (ms)", "lag_p99_ms", "{:.1f}"),
    ("delivery lag max (ms)", "lag_max_ms", "{:.1f}"),
    ("server RSS before / after connecting (MB)", ("rss_before_mb", "rss_after_mb"), "{:.0f} / {:.0f}"),
    ("memory per connection (KB)", "kb_per_connection", "{:.1f}"),
    ("server peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ("server CPU idle, all connected (cores)", "idle_cores_connected", "{:.3f}"),
    ("frames/s while streaming", "frames_per_s", "{:,.0f}"),
    ("server CPU while streaming (cores)", "server_cores", "{:.2f}"),
    ("server CPU per delivered frame (µs)", "server_cpu_us_per_frame", "{:.0f}"),
    ("streaming window, first to last delta (s)", "stream_wall_s", "{:.1f}"),
    ("machine busy while streaming (cores, of 2)", "machine_busy_cores", "{:.2f}"),
    ("client processes' CPU, connected to done (s)", "client_cpu_s", "{:.1f}"),
    ("clients out of order / incomplete / unfinished",
     ("out_of_order_clients", "incomplete_clients", "unfinished_clients"), "{} / {} / {}"),
    ("errors", "errors", "{}"),
]
LABELS = {"switchyard": "Switchyard API (1 uvicorn process)",
          "baseline": "baseline: Redis pub/sub → websockets.broadcast"}


def _cell(run: dict[str, Any], keys: str | tuple[str, ...], fmt: str) -> str:
    values = [run[k] for k in ((keys,) if isinstance(keys, str) else keys)]
    return fmt.format(*values)


def report(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    per_job = args.clients // args.jobs
    print(f"\n## WebSocket fan-out: {args.clients:,} clients on one API process, {args.jobs} streaming jobs × "
          f"{per_job} subscribers, {args.tps:g} tokens/s × {args.tokens} tokens "
          f"(TTFT {args.ttft_ms:.0f} ms + jitter)\n")
    print("Delivery lag: client receipt time − the event's `at` (worker, before publishing), per `delta` frame.\n")
    names = list(runs)
    print("| | " + " | ".join(LABELS[n] for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, keys, fmt in ROWS:
        print(f"| {label} | " + " | ".join(_cell(runs[n], keys, fmt) for n in names) + " |")
    result: dict[str, Any] = {
        "benchmark": "fanout",
        "command": "python -m scripts.bench.fanout " + " ".join(sys.argv[1:]),
        "params": {"clients": args.clients, "jobs": args.jobs, "tps": args.tps, "tokens": args.tokens,
                   "ttft_ms": args.ttft_ms, "client_procs": args.client_procs, "cores": os.cpu_count()},
        "runs": runs, "target": {"lag_p99_ms_below": TARGET_P99_MS},
    }
    plat, base = runs.get("switchyard"), runs.get("baseline")
    if plat and base:
        ratios = {"lag_p50": plat["lag_p50_ms"] / base["lag_p50_ms"],
                  "lag_p99": plat["lag_p99_ms"] / base["lag_p99_ms"],
                  "memory_per_connection": plat["kb_per_connection"] / base["kb_per_connection"],
                  "cpu_per_frame": plat["server_cpu_us_per_frame"] / base["server_cpu_us_per_frame"]}
        result["ratios"] = ratios
        print("\nSwitchyard ÷ baseline: " + ", ".join(f"{k} {v:.1f}×" for k, v in ratios.items()))
    if plat:
        ok = plat["lag_p99_ms"] < TARGET_P99_MS and plat["connected"] == args.clients and not plat["errors"] \
            and plat["delta_frames"] == plat["expected_delta_frames"] and not plat["out_of_order_clients"]
        result["target"].update(met=ok, lag_p99_ms=plat["lag_p99_ms"])
        result["targets"] = [
            {"label": f"fan-out: p99 delivery lag < {TARGET_P99_MS:.0f} ms, {args.clients:,} WS clients, one API "
                      "process, every frame in order", "met": ok,
             "figure": f"p99 {plat['lag_p99_ms']:.1f} ms (baseline {base['lag_p99_ms']:.1f} ms)" if base
             else f"p99 {plat['lag_p99_ms']:.1f} ms"},
            {"label": "fan-out: memory per connection (reported)", "met": True,
             "figure": f"{plat['kb_per_connection']:.1f} KB" + (f" (baseline {base['kb_per_connection']:.1f} KB)"
                                                               if base else "")}]
        print(f"\nTarget: p99 delivery lag < {TARGET_P99_MS:.0f} ms with {args.clients:,} clients, every frame "
              f"delivered in order: p99 {plat['lag_p99_ms']:.1f} ms {'✓' if ok else '✗'}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=20, help="concurrent streaming jobs (clients / jobs per job)")
    parser.add_argument("--tps", type=float, default=10, help="tokens per second per job")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per reply")
    parser.add_argument("--ttft-ms", type=float, default=300)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=50, help="handshakes in flight per client process")
    parser.add_argument("--idle-seconds", type=float, default=3, help="idle CPU sample with every client connected")
    parser.add_argument("--servers", nargs="+", default=["switchyard", "baseline"], choices=list(LABELS))
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the result here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 clients, 4 jobs, 20 tokens")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main()
    if args.baseline_server:
        return baseline_main(args.port)
    if args.quick:
        args.clients, args.jobs, args.tokens = 200, 4, 20
    raise_nofile()
    result = report(args, bench(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\n(result in {args.json})", file=sys.stderr)


if __name__ == "__main__":
    main()
