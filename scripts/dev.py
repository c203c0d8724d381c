"""`switchyard dev` (`python -m scripts.dev`): the whole platform on one machine, stopped cleanly by Ctrl-C.

Starts embedded PostgreSQL + pgvector and Redis when `DATABASE_URL` /
`REDIS_URL` are unset, applies the schema, makes a dev admin with an API key,
then runs the provider simulator, the API, a worker pool and the maintenance
loop as child processes and prints what to curl.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jobs.settings import get_settings
from scripts.embedded import start_postgres, start_redis

DEV_ADMIN = "admin@switchyard.local"


def _die_with_parent() -> None:
    """Children get SIGTERM if `switchyard dev` itself dies, so nothing is orphaned (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _dev_password(database_url: str, password_file: Path) -> str:
    """The dev admin's dashboard password: generated once, kept in the data dir (dev only)."""
    import secrets

    import psycopg

    from jobs.accounts import find_user, set_password_hash
    from jobs.passwords import hash_password

    password = password_file.read_text().strip() if password_file.exists() else secrets.token_urlsafe(12)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        user_id = await find_user(conn, DEV_ADMIN)
        assert user_id is not None, "the dev admin is created first"
        await set_password_hash(conn, user_id, await hash_password(password))
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return password


async def _dev_key(database_url: str, key_file: Path) -> str:
    """The dev admin's API key: created once, kept in the data dir (dev only)."""
    import psycopg

    from jobs.accounts import create_api_key, create_user, find_user, principal_for_key
    from jobs.credits import credit

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        user_id = await find_user(conn, DEV_ADMIN)
        if user_id is None:
            user_id = await create_user(conn, DEV_ADMIN, "admin")
            await credit(conn, user_id, "grant", get_settings().dev_admin_credits, reference=f"dev-admin:{user_id}",
                         note="dev stack admin")
        if key_file.exists():
            secret = key_file.read_text().strip()
            if await principal_for_key(conn, secret):
                return secret
        _, secret = await create_api_key(conn, user_id, "dev")
    key_file.write_text(secret + "\n")
    key_file.chmod(0o600)
    return secret


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the dev stack the way Ctrl-C does."""
    raise KeyboardInterrupt


def _spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    print(f"  starting {name}: {' '.join(args[2:])}", flush=True)
    return subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_die_with_parent)


def _wait_ready(url: str, procs: dict[str, subprocess.Popen[bytes]], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited during start-up (code {proc.returncode})")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}")


def _stop(procs: dict[str, subprocess.Popen[bytes]], grace: float = 15) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for name, proc in procs.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"  {name} did not stop in {grace:.0f}s; killing it", flush=True)
            proc.kill()
            proc.wait()


def _banner(port: int, key: str, password: str) -> str:
    base = f"http://127.0.0.1:{port}"
    body = ('{"kind":"chat.completion","input":{"model":"sim-small","stream":true,'
            '"messages":[{"role":"user","content":"Tell me about switchyards"}]}}')
    return f"""
Switchyard is up.
  API      {base}        docs: {base}/docs
  API key  {key}   (dev admin {DEV_ADMIN})
  Operator dashboard  {base}/admin   (log in as {DEV_ADMIN} / {password})

Submit a job and stream its events:
  export SY_KEY={key}
  JOB=$(curl -s {base}/v1/jobs -H "Authorization: Bearer $SY_KEY" -H 'Content-Type: application/json' \\
        -d '{body}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
  curl -N {base}/v1/jobs/$JOB/events -H "Authorization: Bearer $SY_KEY"
  curl -s {base}/v1/jobs/$JOB -H "Authorization: Bearer $SY_KEY"

Upload a PDF, watch it being processed, search it:
  PJ=$(curl -s {base}/v1/files -H "Authorization: Bearer $SY_KEY" -F purpose=assistants \\
        -F file=@docs/examples/field-guide.pdf \\
        | python3 -c 'import sys,json; print(json.load(sys.stdin)["process_job_id"])')
  curl -N {base}/v1/jobs/$PJ/events -H "Authorization: Bearer $SY_KEY"
  curl -s {base}/v1/search -H "Authorization: Bearer $SY_KEY" -H 'Content-Type: application/json' \\
        -d '{{"query":"what does a 202 promise"}}'

Ctrl-C stops everything.
"""


def run_dev(args: argparse.Namespace) -> None:
    """Run the platform until Ctrl-C."""
    settings = get_settings()
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    stoppers = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        if not settings.database_url:
            print(f"  starting embedded PostgreSQL (+pgvector) in {data_dir / 'postgres'}", flush=True)
            env["DATABASE_URL"], stop_pg = start_postgres(data_dir / "postgres")
            stoppers.append(stop_pg)
        if not settings.redis_url:
            env["REDIS_URL"], redis_proc = start_redis(data_dir / "redis")
            print(f"  started embedded Redis at {env['REDIS_URL']}", flush=True)
            stoppers.append(lambda: (redis_proc.terminate(), redis_proc.wait(10)))
        env.setdefault("SIMULATOR_URL", f"http://127.0.0.1:{args.simulator_port}")

        from jobs.db import migrate

        migrate(env["DATABASE_URL"])
        key = asyncio.run(_dev_key(env["DATABASE_URL"], data_dir / "dev-api-key"))
        password = asyncio.run(_dev_password(env["DATABASE_URL"], data_dir / "dev-admin-password"))
        py = [sys.executable, "-m"]
        procs["simulator"] = _spawn("simulator", [*py, "scripts.simulator", "--port", str(args.simulator_port)], env)
        procs["api"] = _spawn("api", [*py, "api.cli", "api", "--port", str(args.port)], env)
        procs["worker"] = _spawn("worker", [*py, "api.cli", "worker", "--pool", "dev", "--processes",
                                            str(args.processes), "--threads", str(args.threads)], env)
        procs["maintenance"] = _spawn("maintenance", [*py, "api.cli", "maintenance"], env)
        _wait_ready(f"http://127.0.0.1:{args.port}/readyz", procs)
        print(_banner(args.port, key, password), flush=True)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [name for name, p in procs.items() if p.poll() is not None]
        print(f"  {', '.join(dead)} exited; stopping everything", flush=True)
    except KeyboardInterrupt:
        print("\n  stopping…", flush=True)
    finally:
        # A second Ctrl-C must not cut the clean-up short and orphan servers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(procs)
        for stop in reversed(stoppers):
            stop()
        print("  stopped.", flush=True)


def parser() -> argparse.ArgumentParser:
    """The dev stack's options (`switchyard dev` hands its arguments over untouched)."""
    parser = argparse.ArgumentParser(prog="switchyard dev", description="run the whole platform locally")
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    parser.add_argument("--simulator-port", type=int, default=8900)
    parser.add_argument("--processes", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="worker threads per process")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse the dev stack's options and run it."""
    run_dev(parser().parse_args(argv))


if __name__ == "__main__":
    main()
