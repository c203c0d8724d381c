"""`switchyard` — the command line: run the platform's processes and admin tasks.

    switchyard dev            the whole platform on this machine (embedded servers by default)
    switchyard migrate        apply schema.sql
    switchyard api            the HTTP API (uvicorn)
    switchyard worker ARGS    a Dramatiq worker pool: `switchyard worker --queues chat -p 2 -t 8`
    switchyard maintenance    the reconciler / maintenance loop
    switchyard simulator      the provider simulator (development tool)
    switchyard create-user    add a user with the sign-up credits (`--role admin`, `--password`)
    switchyard create-key     create an API key for a user; the secret is printed once

This is product code (ADR 0005): it lives beside the API it drives. The
process subcommands exec the entry module of the process they start
(`dramatiq workers.app`, `workers.maintenance`, `scripts.simulator`,
`scripts.dev`), so `api/` imports nothing from `workers/` or `scripts/`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from jobs.settings import get_settings


def _migrate(_: argparse.Namespace) -> None:
    from jobs.db import migrate

    migrate(get_settings().database_url)
    print("schema applied")


def _api(args: argparse.Namespace) -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "api.app:create_app", factory=True, host=args.host or settings.api_host,
        port=args.port or settings.api_port, workers=args.workers, access_log=False,
        log_config=None, ws_ping_interval=20, timeout_graceful_shutdown=10,
        # Longer than common client pool idle timeouts (httpx: 5 s), so the server never closes a
        # connection the client is about to reuse.
        timeout_keep_alive=65,
    )


def _worker(args: argparse.Namespace) -> None:
    import tempfile

    settings = get_settings()
    # prometheus_client's multiprocess mode must be on before any worker process
    # imports it; Dramatiq's exposition server serves the merged metrics. (Set for
    # the exec'd program only: this process reads nothing back.)
    prom_dir = tempfile.mkdtemp(prefix="switchyard-prom-")
    for name, value in (("PROMETHEUS_MULTIPROC_DIR", prom_dir), ("dramatiq_prom_db", prom_dir),
                        ("dramatiq_prom_port", str(settings.worker_metrics_port))):
        os.putenv(name, value)
    extra = args.rest or []
    if "--worker-shutdown-timeout" not in extra:
        # SIGTERM drains: in-flight jobs get this long to finish before the pool exits.
        extra = [*extra, "--worker-shutdown-timeout", str(int(settings.shutdown_grace_seconds * 1000))]
    _exec_module("dramatiq", "workers.app", *extra)


def _exec_module(module: str, *args: str) -> None:
    """Replace this process with `python -m module args` (signals then reach that program directly)."""
    os.execvp(sys.executable, [sys.executable, "-m", module, *args])


def _maintenance(_: argparse.Namespace) -> None:
    _exec_module("workers.maintenance")


def _simulator(args: argparse.Namespace) -> None:
    _exec_module("scripts.simulator", *(args.rest or []))


async def _create_user_async(email: str, role: str, password: str | None) -> None:
    import psycopg

    from jobs.accounts import find_user, sign_up
    from jobs.db import require_url
    from jobs.passwords import MAX_PASSWORD, MIN_PASSWORD, hash_password

    if password is not None and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise SystemExit(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    settings = get_settings()
    async with await psycopg.AsyncConnection.connect(require_url(settings.database_url), autocommit=True) as conn:
        if await find_user(conn, email):
            raise SystemExit(f"user {email} already exists")
        password_hash = await hash_password(password) if password is not None else None
        user = await sign_up(conn, email, password_hash=password_hash, role=role, via="cli",
                             grant=settings.signup_grant_credits)
    print(f"created {role} {user.email} ({user.id})")


async def _create_key_async(email: str, name: str) -> None:
    import psycopg

    from jobs.accounts import create_api_key, find_user
    from jobs.db import require_url

    async with await psycopg.AsyncConnection.connect(require_url(get_settings().database_url), autocommit=True) as conn:
        user_id = await find_user(conn, email)
        if user_id is None:
            raise SystemExit(f"no user {email}; create it with `switchyard create-user --email {email}`")
        _, secret = await create_api_key(conn, user_id, name)
    print(secret)


def _dev(args: argparse.Namespace) -> None:
    _exec_module("scripts.dev", *(args.rest or []))


#: Subcommands whose arguments are handed over untouched (the wrapped program defines its options).
_PASS_THROUGH = {"dev": _dev, "worker": _worker, "simulator": _simulator}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `switchyard` console script."""
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply schema.sql").set_defaults(func=_migrate)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(func=_api)

    for name, func, help_ in (("dev", _dev, "run the whole platform locally (`switchyard dev --help`)"),
                              ("worker", _worker, "run a Dramatiq worker pool (args go to dramatiq)"),
                              ("simulator", _simulator, "run the provider simulator (dev tool)")):
        p = sub.add_parser(name, help=help_, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)

    sub.add_parser("maintenance", help="run the maintenance loop").set_defaults(func=_maintenance)

    user = sub.add_parser("create-user", help="add a user")
    user.add_argument("--email", required=True)
    user.add_argument("--role", choices=["user", "admin"], default="user")
    user.add_argument("--password", help="lets the user log in (without one: API keys only)")
    user.set_defaults(func=lambda a: asyncio.run(_create_user_async(a.email, a.role, a.password)))

    key = sub.add_parser("create-key", help="create an API key (printed once)")
    key.add_argument("--email", required=True)
    key.add_argument("--name", default="cli")
    key.set_defaults(func=lambda a: asyncio.run(_create_key_async(a.email, a.name)))

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _PASS_THROUGH:
        # Everything after `dev` / `worker` / `simulator`, `--help` too, belongs to the wrapped program.
        _PASS_THROUGH[argv[0]](argparse.Namespace(rest=argv[1:]))
        return
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
