"""Benchmark: gateway overhead of Switchyard vs the LiteLLM proxy, and streaming first-token overhead.

The same OpenAI chat requests (model `sim-small`, 16-token replies) go to

- direct:     the provider simulator's OpenAI base URL (the baseline, no gateway);
- litellm:    the LiteLLM proxy (its own venv, `.bench/litellm-venv`, created here if missing; one
              uvicorn worker, `LITELLM_LOG=ERROR` so it writes no access log, as our API does not);
- switchyard: our `POST /v1/chat/completions` (one API process, one worker process with
              `--threads 56 --queues chat`, the maintenance loop, embedded PostgreSQL and Redis):
              every request is a job — INSERT, enqueue, a worker claims it and calls the
              simulator, the result comes back over Redis.

Load phases: a closed loop of C clients (C = 1, 10, 50), each on its own keep-alive connection,
non-streaming and streaming (`stream: true`), the simulator answering instantly (no TTFT, no token
pacing: its defaults). Each phase warms up, then measures a fixed window; latency is request sent →
whole response read (streaming: → end of stream), and the figures are per round:
added p50/p99 = target's p50/p99 − direct's at the same concurrency; requests/s = responses
completed in the window / window. The three targets are interleaved (the order rotates each
phase) and the table shows medians over rounds.

First-token phase: one client, the simulator holding the first token `--ttft-ms` (so a native
client has subscribed before it), requests round-robin over five paths: (a) direct, (b) LiteLLM,
(c1) our OpenAI-compatible SSE, (c2) `POST /v1/jobs` + SSE `/v1/jobs/{id}/events`, (c3) the same
+ WebSocket `/v1/jobs/{id}/stream`. The simulator runs wrapped (`--serve-simulator`): it stamps
when it wrote each reply's first byte (CLOCK_MONOTONIC, shared by every process of the machine),
keyed by a tag in the prompt, so each request gives **provider first byte → client first delta**
directly; "over direct" is the client's time to first delta minus direct's, same run, medians.

The load generator is a separate process (`--load`) speaking HTTP/1.1 by hand on asyncio streams
with uvloop (no HTTP library: it must cost less CPU than what it measures). This is a 2-core
machine: the load generator, the simulator and the gateway share it, so CPU seconds per request of
each gateway's processes are reported beside the rates. Peers run offline: the benchmark re-executes
itself in a network namespace with only loopback (`unshare -n`) after installing LiteLLM.

    .venv/bin/python -m scripts.bench.gateway [--rounds 3] [--duration 5] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from scripts.bench.chunks import decode_chunk

ROOT = Path(__file__).resolve().parent.parent.parent
LITELLM_VENV = ROOT / ".bench" / "litellm-venv"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ("direct", "litellm", "switchyard")
PATHS = ("direct", "litellm", "openai-sse", "job-sse", "job-ws")
PATH_LABELS = {
    "direct": "(a) direct to the simulator",
    "litellm": "(b) LiteLLM proxy",
    "openai-sse": "(c1) Switchyard /v1/chat/completions SSE",
    "job-sse": "(c2) Switchyard POST /v1/jobs + SSE /events",
    "job-ws": "(c3) Switchyard POST /v1/jobs + WS /stream",
}
MODES = ("non-stream", "stream")
MODEL = "sim-small"
LITELLM_KEY = "sk-bench"
#: A tag in the prompt that the wrapped simulator keys its first-byte stamps by.
TAG = re.compile(rb"bench-tag-([0-9a-f]{32})")

# ---------------------------------------------------------------------------------------------
# The simulator, wrapped to stamp the first byte of each tagged reply (`--serve-simulator PORT`)

Scope = dict[str, Any]
Message = dict[str, Any]


class FirstByteStamps:
    """ASGI wrapper: the monotonic time (ns) each tagged chat reply's first body byte was written.

    `GET /_bench/first-bytes` returns the stamps and forgets them.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stamps: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Callable[[], Any], send: Callable[[Message], Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/_bench/first-bytes":
            body, self.stamps = msgspec.json.encode(self.stamps), {}
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return None
        if scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if not message.get("more_body"):
                break
        found = TAG.search(b"".join(m.get("body", b"") for m in messages))
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        if found is None:
            return await self.app(scope, replayed, send)
        tag = found.group(1).decode()

        async def stamping(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and message.get("body") and tag not in self.stamps:
                self.stamps[tag] = time.monotonic_ns()

        return await self.app(scope, replayed, stamping)


def serve_simulator(port: int) -> None:
    """The simulator (instant by default) behind `FirstByteStamps`, on 127.0.0.1:`port`."""
    import uvicorn

    from scripts.simulator import create_app

    uvicorn.run(FirstByteStamps(create_app()), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, lifespan="on")


# ---------------------------------------------------------------------------------------------
# The load generator (`--load SPEC` / `--first-token SPEC`): hand-written HTTP/1.1 on asyncio streams


class _Event(msgspec.Struct):
    """The part of a native job event a reader needs."""

    type: str


_event = msgspec.json.Decoder(_Event).decode


class Http:
    """One keep-alive HTTP/1.1 connection, requests written and responses parsed by hand."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items()).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None,
                      on_data: Callable[[bytes], None] | None = None) -> tuple[int, bytes]:
        """(status, body); a streamed body goes to `on_data` piece by piece instead. Reconnects a stale connection."""
        for attempt in (1, 2):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None and self.writer is not None
            head = b"%s %s HTTP/1.1\r\n%s" % (method.encode(), path.encode(), self.headers)
            if body is not None:
                head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            self.writer.write(head + b"\r\n" + (body or b""))
            try:
                status_line = await self.reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                try:
                    return await self._response(int(status_line.split()[1]), on_data)
                except BaseException:
                    self.close()
                    raise
            self.close()  # the server closed an idle keep-alive connection: once more on a new one
            if fresh or attempt == 2:
                raise ConnectionError(f"{method} {path}: connection closed before a response")
        raise AssertionError("unreachable")

    async def _response(self, status: int, on_data: Callable[[bytes], None] | None) -> tuple[int, bytes]:
        reader = self.reader
        assert reader is not None
        length, chunked, close = None, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        data = b""
        if chunked:
            while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
                piece = (await reader.readexactly(size + 2))[:-2]
                if on_data is None:
                    data += piece
                else:
                    on_data(piece)
            while await reader.readline() not in (b"\r\n", b""):
                pass  # trailers
        elif length is not None:
            data = await reader.readexactly(length)
        else:
            data, close = await reader.read(), True
        if on_data is not None and data:
            on_data(data)
        if close:
            self.close()
        return status, data


class SseReader:
    """Feeds an SSE body piece by piece; notes when the first text delta and the end arrived."""

    def __init__(self, native: bool) -> None:
        self.native = native
        self.buffer = b""
        self.first = 0
        self.done = False

    def feed(self, piece: bytes) -> None:
        self.buffer = (self.buffer + piece).replace(b"\r\n", b"\n")
        *events, self.buffer = self.buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip())

    def _data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
        elif self.native:
            kind = _event(payload).type
            if kind == "delta" and not self.first:
                self.first = time.monotonic_ns()
            self.done = self.done or kind in ("succeeded", "failed", "cancelled")
        elif not self.first and any(c.delta.content for c in decode_chunk(payload).choices):
            self.first = time.monotonic_ns()


def chat_body(stream: bool, prompt: str) -> bytes:
    return msgspec.json.encode({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": prompt}]})


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """A closed loop of `concurrency` clients for warm-up + window; every request's (start, first delta, end)."""
    stream, n = spec["stream"], spec["concurrency"]
    body = chat_body(stream, "Tell me about switchyards")
    samples: list[tuple[int, int, int]] = []
    errors: list[str] = []
    t0 = time.monotonic_ns()
    stop_at = t0 + int((spec["warmup"] + spec["duration"]) * 1e9)

    async def client() -> None:
        conn = Http("127.0.0.1", spec["port"], spec["headers"])
        while (start := time.monotonic_ns()) < stop_at:
            reader = SseReader(native=False)
            try:
                status, data = await conn.request("POST", spec["path"], body, reader.feed if stream else None)
                ok = status == 200 and (reader.done and reader.first > 0 if stream else b'"choices"' in data)
                if not ok:
                    errors.append(f"{status}: {data[:300]!r}")
            except Exception as exc:
                conn.close()
                ok = False
                errors.append(repr(exc))
            if ok:
                samples.append((start, reader.first, time.monotonic_ns()))
            else:
                await asyncio.sleep(0.05)
        conn.close()

    cpu0 = os.times()
    await asyncio.gather(*(client() for _ in range(n)))
    cpu1 = os.times()
    return {"t0": t0, "samples": samples, "errors": len(errors), "first_error": errors[0] if errors else None,
            "cpu_s": cpu1.user + cpu1.system - cpu0.user - cpu0.system}


async def run_first_token(spec: dict[str, Any]) -> dict[str, Any]:
    """`n` rounds of one request on each path (order rotating); per path [(tag, start, first delta)] in ns."""
    import websockets

    sim = Http("127.0.0.1", spec["sim_port"], {})
    lite = Http("127.0.0.1", spec["litellm_port"], {"Authorization": f"Bearer {LITELLM_KEY}"})
    ours = Http("127.0.0.1", spec["api_port"], {"Authorization": f"Bearer {spec['key']}"})
    found: dict[str, list[tuple[str, int, int]]] = {p: [] for p in spec["paths"]}
    errors: list[str] = []

    async def openai_stream(conn: Http, path: str, prompt: str) -> int:
        reader = SseReader(native=False)
        status, data = await conn.request("POST", path, chat_body(True, prompt), reader.feed)
        if status != 200 or not reader.first:
            raise RuntimeError(f"{status}: {data[:300]!r}")
        return reader.first

    async def submit(prompt: str) -> str:
        job = {"kind": "chat.completion", "input": {"model": MODEL, "stream": True,
                                                     "messages": [{"role": "user", "content": prompt}]}}
        status, data = await ours.request("POST", "/v1/jobs", msgspec.json.encode(job))
        if status != 202:
            raise RuntimeError(f"{status}: {data[:300]!r}")
        return str(json.loads(data)["id"])

    async def job_sse(prompt: str) -> int:
        job_id = await submit(prompt)
        reader = SseReader(native=True)
        status, data = await ours.request("GET", f"/v1/jobs/{job_id}/events", None, reader.feed)
        if status != 200 or not reader.first:
            raise RuntimeError(f"{status}: {data[:300]!r}")
        return reader.first

    async def job_ws(prompt: str) -> int:
        job_id = await submit(prompt)
        first = 0
        async with websockets.connect(f"ws://127.0.0.1:{spec['api_port']}/v1/jobs/{job_id}/stream",
                                      additional_headers={"Authorization": f"Bearer {spec['key']}"}) as ws:
            async for raw in ws:
                kind = _event(raw if isinstance(raw, bytes) else raw.encode()).type
                if kind == "delta" and not first:
                    first = time.monotonic_ns()
                if kind in ("succeeded", "failed", "cancelled"):
                    break
        if not first:
            raise RuntimeError("no delta event")
        return first

    calls: dict[str, Callable[[str], Any]] = {
        "direct": lambda p: openai_stream(sim, "/v1/chat/completions", p),
        "litellm": lambda p: openai_stream(lite, "/v1/chat/completions", p),
        "openai-sse": lambda p: openai_stream(ours, "/v1/chat/completions", p),
        "job-sse": job_sse, "job-ws": job_ws,
    }
    paths = list(spec["paths"])
    for i in range(spec["n"] + 1):  # the first pass warms connections up and is not kept
        for path in paths[i % len(paths):] + paths[:i % len(paths)]:
            tag = uuid.uuid4().hex
            prompt = f"[[sim: ttft_ms={spec['ttft_ms']}]] Tell me about switchyards bench-tag-{tag}"
            start = time.monotonic_ns()
            try:
                first = await calls[path](prompt)
            except Exception as exc:
                errors.append(f"{path}: {exc!r}")
                continue
            if i:
                found[path].append((tag, start, first))
            await asyncio.sleep(0.02)
    for conn in (sim, lite, ours):
        conn.close()
    return {"paths": found, "errors": errors}


def child_main(kind: str, spec_json: str) -> None:
    import uvloop

    spec = json.loads(spec_json)
    result = uvloop.run(run_load(spec) if kind == "load" else run_first_token(spec))
    # A file, not stdout: the event loop may leave stdout non-blocking, and a pipe holds 64 KiB.
    Path(spec["out"]).write_text(json.dumps(result))


def run_child(kind: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run the load generator in a fresh process and return its figures."""
    with tempfile.NamedTemporaryFile(prefix="sy-bench-load-", suffix=".json") as f:
        out = subprocess.run([sys.executable, "-m", "scripts.bench.gateway", f"--{kind}",
                              json.dumps({**spec, "out": f.name})],
                             cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(Path(f.name).read_text())
    return result


# ---------------------------------------------------------------------------------------------
# /proc: CPU and memory of process trees


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds including reaped children)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / CLK_TCK)
    return table


def tree(roots: list[int], table: dict[int, tuple[int, float]] | None = None) -> list[int]:
    """`roots` and all their descendants still alive."""
    table = table if table is not None else _proc_table()
    found, frontier = set(), [r for r in roots if r in table]
    while frontier:
        found.update(frontier)
        frontier = [pid for pid, (ppid, _) in table.items() if ppid in frontier and pid not in found]
    return sorted(found)


def cpu_of(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system, reaped children included) of each group of process trees."""
    table = _proc_table()
    return {name: sum(table[p][1] for p in tree(roots, table)) for name, roots in groups.items()}


def rss_mb(roots: list[int], field: str = "VmRSS") -> float:
    """Summed `VmRSS` (or `VmHWM`) of process trees, MB."""
    total = 0
    for pid in tree(roots):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0)
        except OSError:
            continue
    return total / 1024


def machine_busy() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def postmaster(data_dir: Path) -> int | None:
    """The PostgreSQL server serving `data_dir`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"postgres") and str(data_dir).encode() in cmd:
                return int(entry)
    return None


# ---------------------------------------------------------------------------------------------
# Setup: LiteLLM's venv, the network namespace, the servers


def ensure_litellm() -> None:
    """`.bench/litellm-venv` with `litellm[proxy]`, installed from PyPI if missing (before going offline)."""
    if (LITELLM_VENV / "bin" / "litellm").exists():
        return
    print(f"installing litellm[proxy] into {LITELLM_VENV} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)


def offline() -> bool:
    """True inside a network namespace with nothing but loopback.

    `/proc/self/net/dev` is this process's namespace (`/sys/class/net` is the one sysfs was mounted in).
    """
    with open("/proc/self/net/dev") as f:
        return [line.split(":")[0].strip() for line in f.readlines()[2:]] == ["lo"]


def reexec_offline() -> None:
    """Run this same command again inside a fresh network namespace with only `lo` up."""
    if os.environ.get("SY_BENCH_NETNS"):
        raise SystemExit("still online after `unshare -n`; run with --no-netns to measure anyway")
    print("re-running inside `unshare -n` (loopback only)...", file=sys.stderr, flush=True)
    os.environ["SY_BENCH_NETNS"] = "1"
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                          sys.executable, "-m", "scripts.bench.gateway", *sys.argv[1:]])


ROUTES = """\
# Generated by scripts/bench/gateway.py: the one model the benchmark uses.
[providers.simulator]
kind = "openai"
base_url = "${SIMULATOR_URL}/v1"
api_key = "sim"

[models."sim-small"]
[[models."sim-small".targets]]
provider = "simulator"
model = "sim-small"
input_price = 100
output_price = 200
context_window = 32768
max_output = 8192
"""

LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {base}/v1
      api_key: sim
"""


class Servers:
    """Every server of the run and the processes each target's CPU is counted on."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log_dir = Path(tempfile.mkdtemp(prefix="sy-bench-gateway-"))
        self.procs: list[Any] = []
        self.stops: list[Callable[[], None]] = []
        self.groups: dict[str, list[int]] = {}
        self.meta: dict[str, Any] = {}

    def start(self) -> None:
        from jobs.db import migrate
        from scripts.bench.kit import new_user
        from scripts.embedded import free_port, start_postgres, start_redis
        from scripts.procs import Process, start_api, start_maintenance, start_worker, wait_http

        self.sim_port = free_port()
        sim = Process("simulator", [sys.executable, "-m", "scripts.bench.gateway", "--serve-simulator",
                                    str(self.sim_port)], {"PATH": "/usr/bin:/bin"}, self.log_dir)
        self.procs.append(sim)
        sim_url = f"http://127.0.0.1:{self.sim_port}"
        wait_http(sim_url + "/healthz", sim)

        self.litellm_port = free_port()
        config = self.log_dir / "litellm.yaml"
        config.write_text(LITELLM_CONFIG.format(model=MODEL, base=sim_url))
        started = time.monotonic()
        lite = Process("litellm", [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host",
                                   "127.0.0.1", "--port", str(self.litellm_port), "--num_workers", "1"],
                       {"PATH": f"{LITELLM_VENV / 'bin'}:/usr/bin:/bin", "HOME": str(self.log_dir),
                        "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                        "LITELLM_LOG": "ERROR"}, self.log_dir)
        self.procs.append(lite)
        wait_http(f"http://127.0.0.1:{self.litellm_port}/health/liveliness", lite, timeout=180)
        version = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                                  "import importlib.metadata as m; print(m.version('litellm'))"],
                                 capture_output=True, text=True).stdout.strip()
        self.meta["litellm"] = {"version": version, "startup_s": round(time.monotonic() - started, 1),
                                "started_offline": offline()}

        pg_dir = Path(tempfile.mkdtemp(prefix="sy-pg-")) / "data"
        database_url, stop_pg = start_postgres(pg_dir)
        self.stops.append(stop_pg)
        redis_url, redis_proc = start_redis(None)
        self.stops.append(redis_proc.terminate)
        migrate(database_url)
        self.key, _ = asyncio.run(new_user(database_url))
        routes = self.log_dir / "routes.toml"
        routes.write_text(ROUTES)
        env = {
            "PATH": "/usr/bin:/bin", "DATABASE_URL": database_url,
            # redis-py's asyncio pool refuses a command beyond 100 connections; the URL is the knob.
            "REDIS_URL": redis_url + "?max_connections=1000", "SIMULATOR_URL": sim_url,
            "SWITCHYARD_ROUTES": str(routes), "LOG_LEVEL": "INFO",
            "SWITCHYARD_RATE_LIMIT_RPM_FREE": "100000000", "SWITCHYARD_MAX_CONCURRENT_JOBS_FREE": "1000000",
            "SWITCHYARD_DATA_DIR": str(self.log_dir / "data"),
            # Sizes the worker's PostgreSQL pool (threads + 2); PostgreSQL allows 100 connections in all.
            "SWITCHYARD_WORKER_THREADS": str(self.args.worker_threads),
        }
        self.api_port = free_port()
        api = start_api(env, self.api_port, self.log_dir)
        self.procs.append(api)
        worker = start_worker(env, self.log_dir, processes=1, threads=self.args.worker_threads, queues=["chat"])
        self.procs.append(worker)
        maintenance = start_maintenance(env, self.log_dir)
        self.procs.append(maintenance)
        pg = postmaster(pg_dir)
        self.groups = {"simulator": [sim.pid], "litellm": [lite.pid],
                       "switchyard": [api.pid, worker.pid, maintenance.pid, redis_proc.pid, *([pg] if pg else [])],
                       "switchyard-python": [api.pid, worker.pid, maintenance.pid]}
        self.meta["rss_idle_mb"] = {"litellm": rss_mb([lite.pid]),
                                    "switchyard_api_worker_maintenance": rss_mb(self.groups["switchyard-python"]),
                                    "postgres_redis": rss_mb([redis_proc.pid, *([pg] if pg else [])])}
        self.meta["worker_threads"] = self.args.worker_threads
        self.meta["logs"] = str(self.log_dir)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        for stop in reversed(self.stops):
            stop()

    def target(self, name: str) -> tuple[int, dict[str, str]]:
        """(port, headers) of a load target."""
        if name == "direct":
            return self.sim_port, {}
        if name == "litellm":
            return self.litellm_port, {"Authorization": f"Bearer {LITELLM_KEY}"}
        return self.api_port, {"Authorization": f"Bearer {self.key}"}

    def first_bytes(self) -> dict[str, int]:
        import httpx

        stamps: dict[str, int] = httpx.get(f"http://127.0.0.1:{self.sim_port}/_bench/first-bytes").json()
        return stamps


# ---------------------------------------------------------------------------------------------
# Phases


def pct(values: list[float], q: int) -> float:
    from scripts.bench.kit import percentile

    return percentile(sorted(values), q)


def load_phase(servers: Servers, target: str, mode: str, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    """One closed-loop phase; figures of the window plus the CPU each process group spent."""
    port, headers = servers.target(target)
    spec = {"port": port, "headers": headers, "path": "/v1/chat/completions", "stream": mode == "stream",
            "concurrency": concurrency, "warmup": args.warmup, "duration": args.duration}
    cpu0, busy0, wall0 = cpu_of(servers.groups), machine_busy(), time.monotonic()
    out = run_child("load", spec, timeout=120 + 2 * (args.warmup + args.duration))
    cpu1, busy1, wall = cpu_of(servers.groups), machine_busy(), time.monotonic() - wall0
    w0 = out["t0"] + args.warmup * 1e9
    w1 = w0 + args.duration * 1e9
    window = [s for s in out["samples"] if w0 <= s[0] < w1]
    latency = [(s[2] - s[0]) / 1e6 for s in window]
    ttfd = [(s[1] - s[0]) / 1e6 for s in window if s[1]]
    done = sum(1 for s in out["samples"] if w0 <= s[2] < w1)
    total = len(out["samples"])
    cpu = {g: cpu1[g] - cpu0[g] for g in cpu0}
    gateway = {"direct": None, "litellm": cpu["litellm"], "switchyard": cpu["switchyard"]}[target]
    return {
        "n": len(latency), "errors": out["errors"], "first_error": out["first_error"],
        "p50_ms": pct(latency, 50) if latency else None, "p99_ms": pct(latency, 99) if latency else None,
        "ttfd_p50_ms": pct(ttfd, 50) if ttfd else None, "rps": done / args.duration,
        "gateway_cpu_ms_per_req": gateway / total * 1000 if gateway is not None and total else None,
        "sim_cpu_ms_per_req": cpu["simulator"] / total * 1000 if total else None,
        "loadgen_cpu_ms_per_req": out["cpu_s"] / total * 1000 if total else None,
        "machine_busy_cores": (busy1 - busy0) / wall,
    }


def first_token_phase(servers: Servers, args: argparse.Namespace) -> dict[str, Any]:
    """One round of the first-token paths; per path the medians of TTFD and provider first byte → client delta."""
    spec = {"sim_port": servers.sim_port, "litellm_port": servers.litellm_port, "api_port": servers.api_port,
            "key": servers.key, "paths": list(PATHS), "n": args.first_token_n, "ttft_ms": args.ttft_ms}
    servers.first_bytes()  # forget the load phases' stamps
    out = run_child("first-token", spec, timeout=600)
    stamps = servers.first_bytes()
    found: dict[str, Any] = {}
    for path, rows in out["paths"].items():
        ttfd = [(first - start) / 1e6 for _, start, first in rows]
        relay = [(first - stamps[tag]) / 1e6 for tag, _, first in rows if tag in stamps]
        found[path] = {"n": len(rows), "ttfd_p50_ms": pct(ttfd, 50) if ttfd else None,
                       "relay_p50_ms": pct(relay, 50) if relay else None,
                       "relay_p99_ms": pct(relay, 99) if relay else None}
    found["errors"] = out["errors"]
    return found


# ---------------------------------------------------------------------------------------------
# Figures


def _med(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _added(rounds: list[dict[str, Any]], direct: list[dict[str, Any]], key: str) -> float | None:
    """Median over rounds of (target − direct) for `key`, round by round."""
    diffs = [r[key] - d[key] for r, d in zip(rounds, direct, strict=True) if r[key] is not None and d[key] is not None]
    return statistics.median(diffs) if diffs else None


def summarize(load: dict[str, list[dict[str, Any]]], first: list[dict[str, Any]],
              args: argparse.Namespace) -> dict[str, Any]:
    """Medians over rounds: load rows (per mode, concurrency, target), first-token rows, max rates, targets."""
    rows = []
    for mode in MODES:
        for c in args.concurrency:
            runs = {t: load[f"{mode}/{c}/{t}"] for t in TARGETS}
            for t in TARGETS:
                rounds = runs[t]

                def added(key: str, rounds: list[dict[str, Any]] = rounds) -> float | None:
                    return _added(rounds, runs["direct"], key)  # noqa: B023 (called at once, in this iteration)

                rows.append({
                    "mode": mode, "concurrency": c, "target": t, "rounds": len(rounds),
                    "p50_ms": _med([r["p50_ms"] for r in rounds]), "p99_ms": _med([r["p99_ms"] for r in rounds]),
                    "ttfd_p50_ms": _med([r["ttfd_p50_ms"] for r in rounds]),
                    "added_p50_ms": added("p50_ms") if t != "direct" else 0.0,
                    "added_p99_ms": added("p99_ms") if t != "direct" else 0.0,
                    "added_ttfd_p50_ms": (added("ttfd_p50_ms") if t != "direct" else 0.0) if mode == "stream"
                    else None,
                    "rps": _med([r["rps"] for r in rounds]),
                    "gateway_cpu_ms_per_req": _med([r["gateway_cpu_ms_per_req"] for r in rounds]),
                    "sim_cpu_ms_per_req": _med([r["sim_cpu_ms_per_req"] for r in rounds]),
                    "loadgen_cpu_ms_per_req": _med([r["loadgen_cpu_ms_per_req"] for r in rounds]),
                    "machine_busy_cores": _med([r["machine_busy_cores"] for r in rounds]),
                    "errors": sum(r["errors"] for r in rounds),
                    "first_error": next((r["first_error"] for r in rounds if r["first_error"]), None),
                    "per_round": rounds,
                })
    max_rps = {mode: {t: max((r["rps"] for r in rows if r["mode"] == mode and r["target"] == t), default=0.0)
                      for t in TARGETS} for mode in MODES}
    ft_rows = []
    for path in PATHS:
        per = [f[path] for f in first]
        over = [f[path]["ttfd_p50_ms"] - f["direct"]["ttfd_p50_ms"] for f in first
                if f[path]["ttfd_p50_ms"] is not None and f["direct"]["ttfd_p50_ms"] is not None]
        ft_rows.append({"path": path, "label": PATH_LABELS[path], "n": sum(p["n"] for p in per),
                        "ttfd_p50_ms": _med([p["ttfd_p50_ms"] for p in per]),
                        "over_direct_p50_ms": statistics.median(over) if over else None,
                        "relay_p50_ms": _med([p["relay_p50_ms"] for p in per]),
                        "relay_p99_ms": _med([p["relay_p99_ms"] for p in per])})
    return {"rows": rows, "max_rps": max_rps, "first_token": ft_rows,
            "first_token_errors": [e for f in first for e in f["errors"]]}


def _target(name: str, ours: float | None, theirs: float | None, want: str) -> dict[str, Any]:
    """`want` "half": ours ≤ theirs / 2 (lower is better); "double": ours ≥ 2 × theirs."""
    if ours is None or theirs is None or theirs <= 0:
        return {"name": name, "ours": ours, "litellm": theirs, "ratio": None, "met": False}
    ratio = ours / theirs
    return {"name": name, "ours": ours, "litellm": theirs, "ratio": ratio,
            "met": ratio <= 0.5 if want == "half" else ratio >= 2.0}


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    def row(mode: str, c: int, t: str) -> dict[str, Any]:
        return next(r for r in summary["rows"] if r["mode"] == mode and r["concurrency"] == c and r["target"] == t)

    found = []
    for mode in MODES:
        found.append(_target(f"added p50 at concurrency 1, {mode} (ms; ≤ ½ LiteLLM's)",
                             row(mode, 1, "switchyard")["added_p50_ms"], row(mode, 1, "litellm")["added_p50_ms"],
                             "half"))
    for mode in MODES:
        found.append(_target(f"max completions/s, {mode} (≥ 2× LiteLLM's)", summary["max_rps"][mode]["switchyard"],
                             summary["max_rps"][mode]["litellm"], "double"))
    ft = {r["path"]: r for r in summary["first_token"]}
    for path in ("openai-sse", "job-sse", "job-ws"):
        found.append(_target(f"first-token overhead p50, provider first byte → client delta, {path} "
                             "(ms; ≤ ½ LiteLLM's)", ft[path]["relay_p50_ms"], ft["litellm"]["relay_p50_ms"], "half"))
    for path in ("openai-sse", "job-sse", "job-ws"):
        found.append(_target(f"first-token overhead p50, time to first delta over direct, {path} "
                             "(ms; ≤ ½ LiteLLM's)", ft[path]["over_direct_p50_ms"],
                             ft["litellm"]["over_direct_p50_ms"], "half"))
    return found


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def report(result: dict[str, Any]) -> None:
    meta, summary = result["meta"], result["summary"]
    print(f"\n## Gateway overhead: direct vs LiteLLM {meta['litellm']['version']} vs Switchyard "
          f"(median of {meta['rounds']} interleaved rounds, {meta['duration_s']:g} s windows)\n")
    print("Simulator with no TTFT and no token pacing, 16-token replies. Added = target − direct, same round. "
          "CPU ms/req: the gateway's processes (Switchyard: API + worker + maintenance + PostgreSQL + Redis).\n")
    print("| mode | C | target | p50 ms | p99 ms | added p50 ms | added p99 ms | first delta p50 ms | req/s "
          "| gateway CPU ms/req | busy cores (of 2) | errors |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary["rows"]:
        print(f"| {r['mode']} | {r['concurrency']} | {r['target']} | {_f(r['p50_ms'], 2)} | {_f(r['p99_ms'], 2)} "
              f"| {_f(r['added_p50_ms'], 2)} | {_f(r['added_p99_ms'], 2)} | {_f(r['ttfd_p50_ms'], 2)} "
              f"| {_f(r['rps'], 0)} | {_f(r['gateway_cpu_ms_per_req'], 2)} | {_f(r['machine_busy_cores'], 2)} "
              f"| {r['errors']} |")
    print("\nMax sustained rate over the concurrencies (requests/s; streams/s when streaming):\n")
    print("| mode | direct | litellm | switchyard | switchyard / litellm |")
    print("|---|---:|---:|---:|---:|")
    for mode, m in summary["max_rps"].items():
        ratio = m["switchyard"] / m["litellm"] if m["litellm"] else float("nan")
        print(f"| {mode} | {m['direct']:,.0f} | {m['litellm']:,.0f} | {m['switchyard']:,.0f} | {ratio:.2f}× |")
    print(f"\n## Streaming first-token overhead (one client, simulator TTFT {meta['ttft_ms']:g} ms, "
          f"{meta['first_token_n']} requests per path per round)\n")
    print("| path | requests | time to first delta p50 ms | over direct p50 ms "
          "| provider first byte → client delta p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in summary["first_token"]:
        print(f"| {r['label']} | {r['n']} | {_f(r['ttfd_p50_ms'], 2)} | {_f(r['over_direct_p50_ms'], 2)} "
              f"| {_f(r['relay_p50_ms'], 2)} | {_f(r['relay_p99_ms'], 2)} |")
    if summary["first_token_errors"]:
        print(f"\nfirst-token errors: {summary['first_token_errors'][:5]}")
    lite = meta["litellm"]
    print(f"\nLiteLLM {lite['version']}: started offline {lite['started_offline']} in {lite['startup_s']} s; RSS idle "
          f"{meta['rss_idle_mb']['litellm']:.0f} MB, after the run {meta['rss_end_mb']['litellm']:.0f} MB "
          f"(peak {meta['rss_peak_mb']['litellm']:.0f} MB). Switchyard API + worker + maintenance: idle "
          f"{meta['rss_idle_mb']['switchyard_api_worker_maintenance']:.0f} MB, after "
          f"{meta['rss_end_mb']['switchyard_api_worker_maintenance']:.0f} MB (peak "
          f"{meta['rss_peak_mb']['switchyard_api_worker_maintenance']:.0f} MB); PostgreSQL + Redis "
          f"{meta['rss_idle_mb']['postgres_redis']:.0f} MB idle.")
    print("\nTargets:\n")
    for t in result["targets"]:
        ratio = "—" if t["ratio"] is None else f"{t['ratio']:.2f}×"
        print(f"- {'MET' if t['met'] else 'MISSED'}: {t['name']}: ours {_f(t['ours'], 2)}, "
              f"LiteLLM {_f(t['litellm'], 2)}, ratio {ratio}")


# ---------------------------------------------------------------------------------------------
# The run


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    servers = Servers(args)
    load: dict[str, list[dict[str, Any]]] = {}
    first: list[dict[str, Any]] = []
    try:
        servers.start()
        phases = len(MODES) * len(args.concurrency) * len(TARGETS)
        with tqdm(total=args.rounds * (phases + 1), desc="gateway", unit="phase", file=sys.stderr) as bar:
            for round_ in range(args.rounds):
                k = 0
                for mode in MODES:
                    for c in args.concurrency:
                        order = TARGETS[k % 3:] + TARGETS[:k % 3] if round_ % 2 == 0 else \
                            tuple(reversed(TARGETS[k % 3:] + TARGETS[:k % 3]))
                        k += 1
                        for target in order:
                            bar.set_postfix_str(f"round {round_ + 1} {mode} C={c} {target}")
                            phase = load_phase(servers, target, mode, c, args)
                            load.setdefault(f"{mode}/{c}/{target}", []).append(phase)
                            if phase["errors"]:
                                tqdm.write(f"  {mode} C={c} {target}: {phase['errors']} errors, first: "
                                           f"{phase['first_error']}", file=sys.stderr)
                            bar.update()
                            time.sleep(0.3)
                bar.set_postfix_str(f"round {round_ + 1} first token")
                first.append(first_token_phase(servers, args))
                bar.update()
        meta = {**servers.meta,
                "rss_end_mb": {"litellm": rss_mb(servers.groups["litellm"]),
                               "switchyard_api_worker_maintenance": rss_mb(servers.groups["switchyard-python"])},
                "rss_peak_mb": {"litellm": rss_mb(servers.groups["litellm"], "VmHWM"),
                                "switchyard_api_worker_maintenance":
                                    rss_mb(servers.groups["switchyard-python"], "VmHWM")}}
    finally:
        servers.stop()
        print(f"(logs in {servers.log_dir})", file=sys.stderr)
    meta.update({"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                 "concurrency": args.concurrency, "ttft_ms": args.ttft_ms, "first_token_n": args.first_token_n,
                 "quick": args.quick, "cpus": os.cpu_count(), "offline": offline(),
                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "load_generator": "separate process, hand-written HTTP/1.1 on asyncio streams + uvloop"})
    summary = summarize(load, first, args)
    return {"meta": meta, "summary": summary, "targets": targets(summary)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per load phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--first-token-n", type=int, default=30, help="requests per path per round")
    parser.add_argument("--ttft-ms", type=float, default=100, help="simulator TTFT in the first-token phase")
    parser.add_argument("--worker-threads", type=int, default=56)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--no-netns", action="store_true", help="do not re-run inside `unshare -n`")
    parser.add_argument("--setup", action="store_true", help="only install LiteLLM's venv (needs the registry)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round, 1.5 s windows, 8 first-token requests")
    parser.add_argument("--serve-simulator", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--first-token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_simulator:
        return serve_simulator(args.serve_simulator)
    if args.load or args.first_token:
        return child_main("load" if args.load else "first-token", args.load or args.first_token)
    if 1 not in args.concurrency:
        parser.error("--concurrency must include 1 (the targets compare added latency at concurrency 1)")
    ensure_litellm()
    if args.setup:
        return None
    if not offline() and not args.no_netns:
        reexec_offline()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.first_token_n = 1, 1.5, 0.5, 8
    result = bench(args)
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
