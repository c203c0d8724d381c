"""Benchmark: N concurrent streaming completions — one OS thread each vs one event loop vs a Switchyard worker.

The simulator runs in its own process at TTFT 500 ms and 50 tokens/s
(`--ttft-ms`, `--tps`), every reply `--tokens` long (a standing `tokens=`
directive, `POST /_sim/faults`). Each design streams N completions at once:

- threads:  one process, N OS threads, each streaming with one shared sync
            `openai.OpenAI` client (blocking I/O: the classic sync Dramatiq
            actor shape); the threads exist before the clock starts;
- asyncio:  one process, one event loop, N tasks streaming with one shared
            `openai.AsyncOpenAI` client under `asyncio.gather`;
- raw-sse:  a reference, not a design: one event loop, N tasks speaking
            HTTP/1.1 by hand on asyncio streams and decoding each chunk with
            `msgspec` (no HTTP library, no SDK) — the floor of N token streams
            in one CPython event loop;
- platform: one real worker process (`switchyard worker --processes 1
            --threads N --queues chat`: Dramatiq with the AsyncIO middleware,
            every job's coroutine on one event loop, the threads only waiting)
            running N streaming `chat.completion` jobs submitted through the
            API, every delta published as an event. By default the jobs are
            submitted while the worker process is stopped (SIGSTOP) and it is
            then resumed, so the N jobs arrive as one burst (a backlog, a spike):
            how fast the API accepts jobs on a 2-core machine shared with the
            worker does not decide how many run at once. `--live-submit`
            submits to the running worker instead.

The first three run in a fresh subprocess each, which measures itself
(`os.times()` around the run, `VmHWM`). For the platform, the worker
process's CPU (utime + stime of `/proc/<pid>/stat`) is read before it resumes
(or before the first submission) and once every job has ended; its RSS,
threads and descriptors are sampled every 100 ms and its peak RSS is its
`VmHWM`; per-stream start, first token and end come from the jobs table
(`started_at`, the attempt's `ttft_ms`, `finished_at`). The simulator's CPU
and the whole machine's busy cores are shown beside each run: the machine is
shared. Designs are interleaved (the order rotates every round); the table
shows medians.

The baseline is the ideal wall time of one stream, TTFT + tokens / rate. A
design short of CPU shows it as a longer wall time and a lower delivered token
rate, not as more than one core: one event loop (or one GIL) cannot use more.
"≈ cores for all at the full rate" is CPU seconds / ideal wall time, and
"streams one core carries" is N × ideal wall / CPU seconds; from a saturated
run both flatter the design (a lagging reader gets several tokens per read).

Settings the platform needs at these thread counts (see docs/benchmarks.md):
`?max_connections=` on `REDIS_URL` (`--redis-max-connections`) and
`SWITCHYARD_WORKER_THREADS=48`, which sizes the worker's PostgreSQL pool
(override with `--worker-env NAME=VALUE`).

    .venv/bin/python -m scripts.bench.streams [--streams 500] [--rounds 3] [--tokens 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from scripts.bench.chunks import decode_chunk

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Tell me about switchyards, stream"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DESIGNS = ("threads", "asyncio", "raw-sse", "platform")
LABELS = {
    "threads": "(a) one OS thread per stream, sync `openai.OpenAI`",
    "asyncio": "(b) one event loop, N tasks, `openai.AsyncOpenAI`",
    "raw-sse": "(b') reference: one event loop, N tasks, bare asyncio streams + msgspec (no HTTP library, no SDK)",
    "platform": "(c) Switchyard worker: 1 process × N threads, async actor",
}

# ---------------------------------------------------------------------------------------------
# /proc readers


def proc_status(pid: int | str) -> dict[str, int]:
    """`VmRSS`, `VmHWM`, `RssAnon`, `RssFile` (kB) and `Threads` of a process (empty once it is gone)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                    found[name] = int(rest.split()[0])
    except OSError:
        pass
    return found


def proc_times(path: str) -> tuple[float, float]:
    """(user, system) CPU seconds from a `/proc/.../stat` file (utime and stime, fields 14 and 15)."""
    with open(path) as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads; not its children)."""
    return sum(proc_times(f"/proc/{pid}/stat"))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by thread id."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found[int(tid)] = sum(proc_times(f"/proc/{pid}/task/{tid}/stat"))
        except OSError:
            continue
    return found


def machine_busy() -> float:
    """CPU seconds all cores of the machine spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def proc_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


# ---------------------------------------------------------------------------------------------
# Designs (a), (b), (b'): each runs in its own fresh process (`--child DESIGN`)

Span = tuple[float, float, float, int]  # start, first token, end (monotonic), tokens


def _result(spans: list[Span | None], errors: list[str], wall: float, cpu0: tuple[float, float, float],
            cpu1: tuple[float, float, float], rss_before_kb: int, threads: int, w0: float) -> dict[str, Any]:
    done = [s for s in spans if s is not None]
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return {
        "wall_s": wall, "cpu_s": user + system, "user_s": user, "sys_s": system,
        "machine_cores": (cpu1[2] - cpu0[2]) / wall,
        "peak_rss_mb": proc_status("self").get("VmHWM", 0) / 1024,
        "rss_before_mb": rss_before_kb / 1024, "threads": threads, "fds": 0,
        "ok": len(done), "errors": len(errors), "first_error": errors[0] if errors else None,
        "tokens": [s[3] for s in done],
        "spans": [(s[0] - w0, s[1] - w0, s[2] - w0) for s in done],
    }


def child_threads(base_url: str, streams: int) -> dict[str, Any]:
    """(a) N OS threads, each blocking on its own stream through one shared sync client."""
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="sim", max_retries=0, timeout=600)
    go = threading.Event()
    spans: list[Span | None] = [None] * streams
    errors: list[str] = []

    def one(i: int) -> None:
        go.wait()
        t0, first, n = time.monotonic(), 0.0, 0
        try:
            with client.chat.completions.create(model="sim-small", stream=True,
                                                messages=[{"role": "user", "content": f"{PROMPT} {i}"}]) as stream:
                for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta.content:
                            n += 1
                            first = first or time.monotonic()
            spans[i] = (t0, first, time.monotonic(), n)
        except Exception as exc:
            errors.append(repr(exc))

    # The threads exist before the clock starts, as a Dramatiq pool's do.
    pool = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(streams)]
    for t in pool:
        t.start()
    threads = proc_status("self").get("Threads", 0)
    rss0 = proc_status("self").get("VmRSS", 0)
    cpu0, w0 = _cpu_self(), time.monotonic()
    go.set()
    for t in pool:
        t.join()
    return _result(spans, errors, time.monotonic() - w0, cpu0, _cpu_self(), rss0, threads, w0)


def child_asyncio(base_url: str, streams: int) -> dict[str, Any]:
    """(b) One event loop, N tasks, one shared `AsyncOpenAI` client."""
    import openai

    async def main() -> dict[str, Any]:
        client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="sim", max_retries=0, timeout=600)
        spans: list[Span | None] = [None] * streams
        errors: list[str] = []

        async def one(i: int) -> None:
            t0, first, n = time.monotonic(), 0.0, 0
            try:
                stream = await client.chat.completions.create(
                    model="sim-small", stream=True, messages=[{"role": "user", "content": f"{PROMPT} {i}"}])
                async with stream:
                    async for chunk in stream:
                        for choice in chunk.choices:
                            if choice.delta.content:
                                n += 1
                                first = first or time.monotonic()
                spans[i] = (t0, first, time.monotonic(), n)
            except Exception as exc:
                errors.append(repr(exc))

        rss0 = proc_status("self").get("VmRSS", 0)
        cpu0, w0 = _cpu_self(), time.monotonic()
        await asyncio.gather(*(one(i) for i in range(streams)))
        wall, cpu1 = time.monotonic() - w0, _cpu_self()
        await client.close()
        return _result(spans, errors, wall, cpu0, cpu1, rss0, proc_status("self").get("Threads", 0), w0)

    return asyncio.run(main())


def child_raw_sse(base_url: str, streams: int) -> dict[str, Any]:
    """(b') One event loop, N tasks, HTTP/1.1 by hand on asyncio streams, each chunk decoded by msgspec.

    No HTTP library and no SDK: the floor of reading N token streams in one Python event loop.
    """
    decode = decode_chunk
    host, port = base_url.removeprefix("http://").split(":")

    async def main() -> dict[str, Any]:
        spans: list[Span | None] = [None] * streams
        errors: list[str] = []

        async def one(i: int) -> None:
            t0, first, n = time.monotonic(), 0.0, 0
            body = msgspec.json.encode({"model": "sim-small", "stream": True,
                                        "messages": [{"role": "user", "content": f"{PROMPT} {i}"}]})
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer sim\r\n"
                             b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (host.encode(), len(body), body))
                status = await reader.readline()
                if b" 200 " not in status:
                    raise RuntimeError(status.decode().strip())
                while await reader.readline() not in (b"\r\n", b""):
                    pass  # headers: uvicorn streams with chunked transfer encoding
                pending = b""
                while size := int((await reader.readline()).strip() or b"0", 16):
                    pending += (await reader.readexactly(size + 2))[:-2]
                    *events, pending = pending.split(b"\n\n")
                    for event in events:
                        if not event.startswith(b"data: ") or event == b"data: [DONE]":
                            continue
                        for choice in decode(event[6:]).choices:
                            if choice.delta.content:
                                n += 1
                                first = first or time.monotonic()
                writer.close()
                spans[i] = (t0, first, time.monotonic(), n)
            except Exception as exc:
                errors.append(repr(exc))

        rss0 = proc_status("self").get("VmRSS", 0)
        cpu0, w0 = _cpu_self(), time.monotonic()
        await asyncio.gather(*(one(i) for i in range(streams)))
        wall, cpu1 = time.monotonic() - w0, _cpu_self()
        return _result(spans, errors, wall, cpu0, cpu1, rss0, proc_status("self").get("Threads", 0), w0)

    return asyncio.run(main())


def _cpu_self() -> tuple[float, float, float]:
    """(user, system) CPU seconds of this process, and the whole machine's busy seconds."""
    t = os.times()
    return t.user, t.system, machine_busy()


CHILDREN: dict[str, Callable[[str, int], dict[str, Any]]] = {
    "threads": child_threads, "asyncio": child_asyncio, "raw-sse": child_raw_sse,
}


# ---------------------------------------------------------------------------------------------
# Figures of one run


@dataclass
class Run:
    """One design's run: the process's own figures plus each stream's (start, first token, end)."""

    design: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    rss_before_mb: float
    threads: int
    fds: int
    ok: int
    errors: int
    tokens: list[int]
    spans: list[tuple[float, float, float]]
    user_s: float = 0.0
    sys_s: float = 0.0
    #: Busy cores of the whole machine during the run (this design, the simulator, servers, anything else).
    machine_cores: float = 0.0
    sim_cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s

    @property
    def peak_concurrent(self) -> int:
        """Most streams open at the same time (sweep over start/end)."""
        points = sorted([(s[0], 1) for s in self.spans] + [(s[2], -1) for s in self.spans],
                        key=lambda p: (p[0], p[1]))
        best = cur = 0
        for _, d in points:
            cur += d
            best = max(best, cur)
        return best

    @property
    def all_overlap(self) -> bool:
        """Every stream started before the first one ended."""
        return bool(self.spans) and max(s[0] for s in self.spans) < min(s[2] for s in self.spans)

    @property
    def ttft_p50_ms(self) -> float:
        return statistics.median(s[1] - s[0] for s in self.spans) * 1000 if self.spans else float("nan")

    @property
    def rate_p50(self) -> float:
        """Delivered tokens/s of the median stream, after its first token."""
        rates = [(n - 1) / (s[2] - s[1]) for s, n in zip(self.spans, self.tokens, strict=True) if s[2] > s[1] and n > 1]
        return statistics.median(rates) if rates else float("nan")


def run_child(design: str, sim_url: str, streams: int, sim_pid: int) -> Run:
    """Run a design in a fresh interpreter; its own measurements come back as JSON."""
    sim0 = proc_cpu(sim_pid)
    out = subprocess.run([sys.executable, "-m", "scripts.bench.streams", "--child", design, "--base-url", sim_url,
                          "--streams", str(streams)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{design} child failed:\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    first_error = data.pop("first_error")
    if first_error:
        print(f"  {design}: {data['errors']} errors, first: {first_error}", file=sys.stderr)
    return Run(design=design, sim_cpu_s=proc_cpu(sim_pid) - sim0, **data)


# ---------------------------------------------------------------------------------------------
# Design (c): the platform


class Sampler(threading.Thread):
    """Samples a process's RSS, threads and open descriptors every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.stop_event = threading.Event()
        self.rss_kb = self.threads = self.fds = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            st = proc_status(self.pid)
            self.rss_kb = max(self.rss_kb, st.get("VmRSS", 0))
            self.threads = max(self.threads, st.get("Threads", 0))
            self.fds = max(self.fds, proc_fds(self.pid))
            self.stop_event.wait(self.every)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def worker_pid(leader: int, threads: int, timeout: float = 30) -> int:
    """The Dramatiq worker process under the pool's leader: the child running the `threads` worker threads."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [(proc_status(k).get("Threads", 0), k) for k in children(leader)]
        kids = [(n, k) for n, k in kids if n >= threads]
        if kids:
            return max(kids)[1]
        time.sleep(0.2)
    raise RuntimeError(f"no worker process with {threads} threads under pid {leader}")


async def run_platform(ctx: PlatformContext, streams: int, round_: int) -> Run:
    """One fresh worker process; N streaming chat jobs through the API; wait until every one ended."""
    import httpx
    import psycopg
    import redis.asyncio as aioredis

    from scripts.procs import start_worker

    pool = start_worker(ctx.env, ctx.log_dir, name=f"worker-r{round_}", processes=1, threads=streams,
                        queues=["chat"])
    try:
        pid = worker_pid(pool.pid, streams)
        await asyncio.sleep(1.0)  # let start-up settle (warm-up middleware, first heartbeats)
        idle0, t_idle = proc_cpu(pid), time.monotonic()
        await asyncio.sleep(2.0)
        idle_cores = (proc_cpu(pid) - idle0) / (time.monotonic() - t_idle)
        idle = proc_status(pid)
        sampler = Sampler(pid)
        sampler.start()
        async with httpx.AsyncClient(base_url=ctx.api_url, headers={"Authorization": f"Bearer {ctx.key}"},
                                     limits=httpx.Limits(max_connections=64), timeout=60) as client:
            gate = asyncio.Semaphore(64)

            async def submit(i: int) -> str:
                body = {"kind": "chat.completion", "input": {"model": "sim-small", "stream": True, "messages": [
                    {"role": "user", "content": f"{PROMPT} {round_}-{i}"}]}}
                async with gate:
                    resp = await client.post("/v1/jobs", json=body)
                resp.raise_for_status()
                return str(resp.json()["id"])

            def mark() -> tuple[float, tuple[float, float], dict[int, float], float, float]:
                return (proc_cpu(ctx.sim_pid), proc_times(f"/proc/{pid}/stat"), thread_cpu(pid), machine_busy(),
                        time.time())

            if ctx.burst:
                # The jobs arrive as one burst: submitted through the API while the worker process is
                # stopped, then it resumes and finds them all queued (a backlog, or a spike of clients).
                os.kill(pid, signal.SIGSTOP)
                try:
                    t_submit = time.time()
                    ids = await asyncio.gather(*(submit(i) for i in range(streams)))
                    submitted = time.time() - t_submit
                    sim0, times0, threads0, busy0, t0 = mark()
                finally:
                    os.kill(pid, signal.SIGCONT)
            else:
                sim0, times0, threads0, busy0, t0 = mark()
                ids = await asyncio.gather(*(submit(i) for i in range(streams)))
                submitted = time.time() - t0
        async with await psycopg.AsyncConnection.connect(ctx.database_url, autocommit=True) as conn:
            unfinished = 0
            while True:
                cur = await conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[]) AND finished_at IS NULL",
                                         (ids,))
                row = await cur.fetchone()
                unfinished = row[0] if row is not None else streams
                if unfinished == 0:
                    break
                if time.time() - t0 > ctx.timeout:
                    print(f"  {unfinished} jobs still unfinished after {ctx.timeout:.0f} s; giving up on them",
                          file=sys.stderr)
                    break
                await asyncio.sleep(0.05)
            times1, sim1, threads1 = proc_times(f"/proc/{pid}/stat"), proc_cpu(ctx.sim_pid), thread_cpu(pid)
            busy = machine_busy() - busy0
            sampler.stop()
            hwm = proc_status(pid).get("VmHWM", 0)
            cur = await conn.execute(
                "SELECT j.id::text, j.status, extract(epoch FROM j.started_at), extract(epoch FROM j.finished_at),"
                " (SELECT a.ttft_ms FROM job_attempts a WHERE a.job_id = j.id AND a.outcome = 'ok' LIMIT 1),"
                " (j.usage->>'completion_tokens')::int,"
                " (SELECT count(*) FROM job_attempts a WHERE a.job_id = j.id AND a.outcome <> 'ok')"
                " FROM jobs j WHERE j.id = ANY(%s::uuid[])", (ids,))
            rows = await cur.fetchall()
        statuses = [r[1] for r in rows]
        ended = [float(r[3]) for r in rows if r[3] is not None]
        wall = (max(ended) if ended and not unfinished else time.time()) - t0
        r = aioredis.from_url(ctx.redis_url)
        try:
            deltas = []
            for job_id in ids:
                entries: list[Any] = await r.xrange(f"sy:{{{job_id}}}:events") or []
                deltas.append(sum(1 for _, fields in entries if b'"type":"delta"' in fields[b"e"]))
        finally:
            await r.aclose()
        ok = [row for row in rows if row[1] == "succeeded"]
        per_thread = sorted((threads1[t] - threads0.get(t, 0.0) for t in threads1), reverse=True)
        # Spans from t0 (the resume, or the first submission); "first token" = claim + the attempt's TTFT.
        spans = [(float(row[2]) - t0, float(row[2]) - t0 + (row[4] or 0) / 1000, float(row[3]) - t0) for row in ok
                 if row[2] is not None and row[3] is not None]
        return Run(design="platform", wall_s=wall, cpu_s=sum(times1) - sum(times0),
                   user_s=times1[0] - times0[0], sys_s=times1[1] - times0[1], machine_cores=busy / wall,
                   peak_rss_mb=hwm / 1024,
                   rss_before_mb=idle.get("VmRSS", 0) / 1024, threads=sampler.threads, fds=sampler.fds, ok=len(ok),
                   errors=len(rows) - len(ok), tokens=[row[5] or 0 for row in ok], spans=spans,
                   sim_cpu_s=sim1 - sim0,
                   extra={"submit_s": submitted, "idle_cores": idle_cores, "sampled_rss_mb": sampler.rss_kb / 1024,
                          "idle_anon_mb": idle.get("RssAnon", 0) / 1024, "idle_file_mb": idle.get("RssFile", 0) / 1024,
                          "failed_attempts": sum(int(row[6]) for row in rows),
                          "busiest_thread_cpu_s": per_thread[0] if per_thread else 0.0,
                          "second_thread_cpu_s": per_thread[1] if len(per_thread) > 1 else 0.0,
                          "threads_sum_cpu_s": sum(per_thread),
                          "deltas_p50": statistics.median(deltas) if deltas else 0,
                          "statuses": {s: statuses.count(s) for s in set(statuses)}})
    finally:
        pool.stop()


@dataclass
class PlatformContext:
    env: dict[str, str]
    api_url: str
    key: str
    database_url: str
    redis_url: str
    log_dir: Path
    sim_pid: int
    timeout: float
    #: Submit every job while the worker is stopped, then resume it (else: submit to the running worker).
    burst: bool


# ---------------------------------------------------------------------------------------------
# The run


def start_simulator(log_dir: Path, ttft_ms: float, tps: float, tokens: int) -> tuple[Any, str]:
    """The simulator in its own process (so its CPU is no design's), every reply `tokens` long."""
    import httpx

    from scripts.embedded import free_port
    from scripts.procs import Process, wait_http

    port = free_port()
    proc = Process("simulator", [sys.executable, "-m", "scripts.simulator", "--host", "127.0.0.1", "--port",
                                 str(port), "--ttft-ms", str(ttft_ms), "--tps", str(tps)],
                   {"PATH": "/usr/bin:/bin"}, log_dir)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    httpx.post(url + "/_sim/faults", json={"model": "*", "directives": f"tokens={tokens}"}).raise_for_status()
    return proc, url


def bench(args: argparse.Namespace) -> dict[str, list[Run]]:
    from jobs.db import migrate
    from scripts.bench.kit import new_user
    from scripts.embedded import free_port, start_postgres, start_redis
    from scripts.procs import start_api, start_maintenance

    log_dir = Path(tempfile.mkdtemp(prefix="sy-bench-streams-"))
    designs = [d for d in DESIGNS if d in args.designs]
    need_stack = "platform" in designs
    results: dict[str, list[Run]] = {d: [] for d in designs}
    stop_pg = redis_proc = api = maintenance = None
    sim, sim_url = start_simulator(log_dir, args.ttft_ms, args.tps, args.tokens)
    try:
        ctx = None
        if need_stack:
            database_url, stop_pg = start_postgres(Path(tempfile.mkdtemp(prefix="sy-pg-")) / "data")
            redis_url, redis_proc = start_redis(None)
            if args.redis_max_connections:
                # redis-py's asyncio pool refuses a command beyond 100 connections (MaxConnectionsError);
                # Switchyard has no setting for it, the URL's query string is the knob.
                redis_url += f"?max_connections={args.redis_max_connections}"
            migrate(database_url)
            key, _owner = asyncio.run(new_user(database_url))
            env = {
                "PATH": "/usr/bin:/bin", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "SIMULATOR_URL": sim_url, "LOG_LEVEL": "INFO",
                "SWITCHYARD_RATE_LIMIT_RPM_FREE": "1000000", "SWITCHYARD_MAX_CONCURRENT_JOBS_FREE": "1000000",
                "SWITCHYARD_DATA_DIR": str(log_dir / "data"),
                # Sizes the worker's PostgreSQL pool (threads + 2 = 50), not its threads (`--threads N`): the default
                # 8 (pool 10) times out (PoolTimeout) at 500 streams, and N (pool N + 2) takes every connection
                # PostgreSQL has (max_connections 100: "too many clients already").
                "SWITCHYARD_WORKER_THREADS": "48",
                **dict(kv.split("=", 1) for kv in args.worker_env),
            }
            port = free_port()
            api = start_api(env, port, log_dir)
            maintenance = start_maintenance(env, log_dir)
            ctx = PlatformContext(env=env, api_url=f"http://127.0.0.1:{port}", key=key, database_url=database_url,
                                  redis_url=redis_url, log_dir=log_dir, sim_pid=sim.pid,
                                  timeout=max(60.0, 20 * (args.ttft_ms / 1000 + args.tokens / args.tps)),
                                  burst=not args.live_submit)
        for round_ in range(args.rounds):
            order = designs[round_ % len(designs):] + designs[:round_ % len(designs)]
            for design in order:
                print(f"round {round_ + 1}/{args.rounds}: {design} ({args.streams} streams)...", file=sys.stderr,
                      flush=True)
                if design == "platform":
                    assert ctx is not None
                    run = asyncio.run(run_platform(ctx, args.streams, round_))
                else:
                    run = run_child(design, sim_url, args.streams, sim.pid)
                results[design].append(run)
                print(f"  wall {run.wall_s:.2f} s, CPU {run.cpu_s:.2f} s ({run.cores:.2f} cores), "
                      f"peak RSS {run.peak_rss_mb:.0f} MB, {run.ok} ok / {run.errors} failed, "
                      f"peak concurrent {run.peak_concurrent}", file=sys.stderr, flush=True)
                time.sleep(1)
    finally:
        for proc in (maintenance, api):
            if proc is not None:
                proc.stop()
        sim.stop()
        if redis_proc is not None:
            redis_proc.terminate()
        if stop_pg is not None:
            stop_pg()
        print(f"(logs in {log_dir})", file=sys.stderr)
    return results


def report(args: argparse.Namespace, results: dict[str, list[Run]]) -> None:
    """Print the tables (markdown) and, with `--json`, write the platform's figures and targets."""
    med = statistics.median
    ideal = args.ttft_ms / 1000 + args.tokens / args.tps
    n = args.streams
    print(f"\n## {n} concurrent streams: TTFT {args.ttft_ms:.0f} ms, {args.tps:g} tokens/s, {args.tokens} tokens "
          f"each (median of {args.rounds} interleaved rounds)\n")
    print(f"Baseline: the ideal wall time of one stream, TTFT + tokens / rate = **{ideal:.2f} s**; "
          f"{n} streams at the full rate are {n * args.tps:,.0f} tokens/s.\n")
    print("| design | streams ok | peak concurrent | wall s | wall / ideal | median TTFT ms | delivered tokens/s "
          "(median stream) | CPU s | cores (CPU / wall) | CPU ms per stream | ≈ cores for all at the full rate "
          "| streams one core carries at the full rate | peak RSS MB | threads | simulator CPU s "
          "| machine busy cores (of 2) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for design, runs in results.items():
        if not runs:
            continue
        cpu = med(r.cpu_s for r in runs)
        print(f"| {LABELS[design]} | {min(r.ok for r in runs)}/{n} | {med(r.peak_concurrent for r in runs):.0f} "
              f"| {med(r.wall_s for r in runs):.2f} | {med(r.wall_s for r in runs) / ideal:.2f}× "
              f"| {med(r.ttft_p50_ms for r in runs):.0f} | {med(r.rate_p50 for r in runs):.1f} "
              f"| {cpu:.2f} | {med(r.cores for r in runs):.2f} | {cpu / n * 1000:.1f} | {cpu / ideal:.2f} "
              f"| {n * ideal / cpu:,.0f} | {med(r.peak_rss_mb for r in runs):.0f} "
              f"| {med(r.threads for r in runs):.0f} | {med(r.sim_cpu_s for r in runs):.2f} "
              f"| {med(r.machine_cores for r in runs):.2f} |")
    base = results.get("asyncio")
    if base:
        b_cpu, b_rss = med(r.cpu_s for r in base), med(r.peak_rss_mb for r in base)
        print("\nRatios to (b), one event loop with the SDK (CPU seconds; peak RSS):\n")
        for design, runs in results.items():
            if runs and design != "asyncio":
                print(f"- {design}: CPU {med(r.cpu_s for r in runs) / b_cpu:.2f}×, "
                      f"RSS {med(r.peak_rss_mb for r in runs) / b_rss:.2f}×")
    print("\nRounds (wall s / CPU s = user + system / peak RSS MB / peak concurrent / every stream started before "
          "the first ended), and RSS before the streams opened (imports, threads, clients):\n")
    for design, runs in results.items():
        print(f"- {design}: " + "; ".join(
            f"{r.wall_s:.2f} / {r.cpu_s:.2f} = {r.user_s:.2f} + {r.sys_s:.2f} / {r.peak_rss_mb:.0f} / "
            f"{r.peak_concurrent} / {'yes' if r.all_overlap else 'no'}" for r in runs)
            + f"; before: {med(r.rss_before_mb for r in runs):.0f} MB")
    plat = results.get("platform")
    if not plat:
        return
    ex = [r.extra for r in plat]
    how = "while the worker was stopped (one burst)" if not args.live_submit else "to the running worker"
    print(f"\nPlatform worker (`--processes 1 --threads {n} --queues chat`):\n")
    print(f"- jobs submitted through the API {how} in {med(e['submit_s'] for e in ex):.2f} s; "
          f"statuses {[e['statuses'] for e in ex]}; provider calls retried {[e['failed_attempts'] for e in ex]}; "
          f"delta events per job (median) {med(e['deltas_p50'] for e in ex):.0f}")
    print(f"- idle with {n} threads: {med(e['idle_cores'] for e in ex):.3f} cores, RSS "
          f"{med(r.rss_before_mb for r in plat):.0f} MB ({med(e['idle_anon_mb'] for e in ex):.0f} MB anonymous, "
          f"{med(e['idle_file_mb'] for e in ex):.0f} MB file-backed)")
    print(f"- running: sampled max RSS {med(e['sampled_rss_mb'] for e in ex):.0f} MB, open descriptors max "
          f"{med(r.fds for r in plat):.0f}, threads {med(r.threads for r in plat):.0f}; CPU of the busiest thread "
          f"(the event loop) {med(e['busiest_thread_cpu_s'] for e in ex):.2f} s, the next busiest "
          f"{med(e['second_thread_cpu_s'] for e in ex):.2f} s, all threads "
          f"{med(e['threads_sum_cpu_s'] for e in ex):.2f} s (per-thread `/proc/<pid>/task/*/stat`; the process "
          f"total, {med(r.cpu_s for r in plat):.2f} s, is the figure in the table)")
    cores, rss = med(r.cores for r in plat), med(r.peak_rss_mb for r in plat)
    concurrent, rate = med(r.peak_concurrent for r in plat), med(r.rate_p50 for r in plat)
    needed = med(r.cpu_s for r in plat) / ideal

    def mark(ok: bool) -> str:
        return "✓" if ok else "✗"

    if args.json:
        args.json.write_text(json.dumps({"streams": n, "cores": cores, "peak_rss_mb": rss, "concurrent": concurrent,
                                         "tokens_per_s": rate, "cores_needed": needed, "targets": [
            {"label": f"worker: >= {n} concurrent streams in one process", "met": concurrent >= n,
             "figure": f"{concurrent:.0f}"},
            {"label": "worker: < 1 core at the full token rate", "met": needed < 1, "figure": f"{needed:.2f} cores"},
            {"label": "worker: < 200 MB RSS", "met": rss < 200, "figure": f"{rss:.0f} MB"}]}, indent=2))
    print(f"\nTarget (one worker process, {n} concurrent streams at {args.tps:g} tokens/s, < 1 core, < 200 MB): "
          f"concurrent {concurrent:.0f} {mark(concurrent >= n)}; delivered {rate:.1f} tokens/s per stream "
          f"{mark(rate >= 0.9 * args.tps)}; {cores:.2f} cores used {mark(cores < 1)}, ≈ {needed:.2f} cores needed "
          f"at the full rate {mark(needed < 1)}; peak RSS {rss:.0f} MB {mark(rss < 200)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply")
    parser.add_argument("--ttft-ms", type=float, default=500)
    parser.add_argument("--tps", type=float, default=50, help="tokens per second per stream")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    parser.add_argument("--worker-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment of the API and worker (e.g. SWITCHYARD_WORKER_THREADS=32)")
    parser.add_argument("--redis-max-connections", type=int, default=1000, metavar="N",
                        help="`?max_connections=N` on REDIS_URL (0: leave redis-py's default of 100)")
    parser.add_argument("--live-submit", action="store_true",
                        help="platform: submit the jobs to the running worker (default: while it is stopped, "
                             "then resume it, so the N jobs arrive as one burst)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 streams, 20 tokens, 1 round")
    parser.add_argument("--json", type=Path, help="write the platform's figures here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = CHILDREN[args.child](args.base_url, args.streams)
        print(json.dumps(result))
        return
    if args.quick:
        args.streams, args.tokens, args.rounds = 50, 20, 1
    report(args, bench(args))


if __name__ == "__main__":
    main()
