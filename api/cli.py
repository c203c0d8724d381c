"""`switchyard` — the command line: run the platform's processes, admin tasks, and the batch user's client.

    switchyard dev            the whole platform on this machine (embedded servers by default)
    switchyard migrate        apply schema.sql
    switchyard api            the HTTP API (uvicorn)
    switchyard worker ARGS    a Dramatiq worker pool: `switchyard worker --pool chat --queues chat -p 2 -t 8`
    switchyard worker-ready   exit 0 when a worker process of this host beat recently (probes)
    switchyard maintenance    the reconciler / maintenance loop
    switchyard simulator      the provider simulator (development tool)
    switchyard create-user    add a user with the sign-up credits (`--role admin`, `--password`)
    switchyard create-key     create an API key for a user; the secret is printed once
    switchyard batch …        submit, watch, list, cancel and download batches (api/cli_client.py)
    switchyard chat PROMPT    stream one chat completion to the terminal (api/cli_client.py)

This is product code (ADR 0005): it lives beside the API it drives. The
process subcommands exec the entry module of the process they start
(`dramatiq workers.app`, `workers.maintenance`, `scripts.simulator`,
`scripts.dev`), so `api/` imports nothing from `workers/` or `scripts/`.
The typer commands only parse; each process subcommand hands a `ProcessArgs`
to its `_handler`, which the deployment-file tests swap out.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import typer

from api.cli_client import batch_app, chat
from jobs.settings import get_settings, use_prometheus_dir


@dataclass(frozen=True)
class ProcessArgs:
    """What the handler of a process subcommand receives."""

    #: `dev` / `worker` / `simulator`: the wrapped program's arguments, untouched.
    rest: list[str] = field(default_factory=list)
    #: `api`: None means the setting (`SWITCHYARD_API_HOST` / `SWITCHYARD_API_PORT`).
    host: str | None = None
    port: int | None = None
    workers: int = 1


def _migrate(_: ProcessArgs) -> None:
    from jobs.db import migrate

    migrate(get_settings().database_url)
    print("schema applied")


def _api(args: ProcessArgs) -> None:
    import tempfile

    import uvicorn

    settings = get_settings()
    # Every API process on this host writes its metrics to one directory and `/metrics` merges
    # them (prometheus_client's multiprocess mode), so a scrape is right whichever process answers.
    use_prometheus_dir(tempfile.mkdtemp(prefix="switchyard-api-prom-"))
    uvicorn.run(
        "api.app:create_app", factory=True, host=args.host or settings.api_host,
        port=args.port or settings.api_port, workers=args.workers, access_log=False,
        log_config=None, ws_ping_interval=20, timeout_graceful_shutdown=10,
        # The streaming sockets only send: a client frame larger than a request body may be is
        # refused (1009) rather than buffered (uvicorn's default is 16 MiB, times a 32-frame queue).
        ws_max_size=settings.max_body_bytes,
        proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
        # Longer than common client pool idle timeouts (httpx: 5 s), so the server never closes a
        # connection the client is about to reuse.
        timeout_keep_alive=65,
    )


def _worker(args: ProcessArgs) -> None:
    import tempfile

    settings = get_settings()
    # prometheus_client's multiprocess mode must be on before any worker process
    # imports it; Dramatiq's exposition server serves the merged metrics. (Set for
    # the exec'd program only: this process reads nothing back.)
    prom_dir = tempfile.mkdtemp(prefix="switchyard-prom-")
    for name, value in (("PROMETHEUS_MULTIPROC_DIR", prom_dir), ("dramatiq_prom_db", prom_dir),
                        ("dramatiq_prom_port", str(settings.worker_metrics_port))):
        os.putenv(name, value)
    pool, extra = _take_option(args.rest, "--pool")
    if pool:
        os.putenv("SWITCHYARD_POOL", pool)  # the `pool` setting of each worker process (heartbeats)
    if "--worker-shutdown-timeout" not in extra:
        # SIGTERM drains: in-flight jobs get this long to finish before the pool exits.
        extra = [*extra, "--worker-shutdown-timeout", str(int(settings.shutdown_grace_seconds * 1000))]
    _exec_module("dramatiq", "workers.app", *extra)


def _take_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """`--name VALUE` / `--name=VALUE` taken out of `args` (the last one wins), and the rest."""
    value, rest, i = None, [], 0
    while i < len(args):
        if args[i] == name and i + 1 < len(args):
            value, i = args[i + 1], i + 2
            continue
        if args[i].startswith(name + "="):
            value = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    return value, rest


def _exec_module(module: str, *args: str) -> None:
    """Replace this process with `python -m module args` (signals then reach that program directly)."""
    os.execvp(sys.executable, [sys.executable, "-m", module, *args])


def _maintenance(_: ProcessArgs) -> None:
    _exec_module("workers.maintenance")


def _simulator(args: ProcessArgs) -> None:
    _exec_module("scripts.simulator", *args.rest)


def _dev(args: ProcessArgs) -> None:
    _exec_module("scripts.dev", *args.rest)


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


#: Subcommands whose arguments are handed over untouched (the wrapped program defines its options).
_PASS_THROUGH: dict[str, Callable[[ProcessArgs], None]] = {"dev": _dev, "worker": _worker, "simulator": _simulator}

_PROCESSES, _ADMIN, _CLIENT = "Run the platform", "Administer", "Use a running API"

app = typer.Typer(
    name="switchyard", help="Switchyard: a job-queue platform for AI workloads.", no_args_is_help=True,
    add_completion=False,
    # A traceback with locals would print database URLs and API keys.
    pretty_exceptions_show_locals=False,
)

#: Click options that leave every argument, `--help` included, to the wrapped program.
_UNPARSED = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _pass_through(name: str, help_: str) -> None:
    """Register `switchyard NAME ARGS…` (listed in the help; `main` dispatches it before typer parses)."""

    def command(ctx: typer.Context) -> None:
        _PASS_THROUGH[name](ProcessArgs(rest=list(ctx.args)))

    app.command(name, help=help_, context_settings=_UNPARSED, add_help_option=False,
                rich_help_panel=_PROCESSES)(command)


_pass_through("dev", "The whole platform on this machine (`switchyard dev --help` for its options).")


@app.command(rich_help_panel=_PROCESSES)
def migrate() -> None:
    """Apply schema.sql (idempotent)."""
    _migrate(ProcessArgs())


@app.command("api", rich_help_panel=_PROCESSES)
def api_command(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: SWITCHYARD_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: SWITCHYARD_API_PORT)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API."""
    _api(ProcessArgs(host=host, port=port, workers=workers))


_pass_through("worker", "A Dramatiq worker pool: `--pool NAME` names it (heartbeats, dashboard); every other "
                        "argument goes to `dramatiq workers.app` (`--queues`, `--processes`, `--threads`).")


@app.command(rich_help_panel=_PROCESSES)
def maintenance() -> None:
    """Run the maintenance loop (re-sends lost jobs, reclaims jobs of dead workers)."""
    _maintenance(ProcessArgs())


@app.command("worker-ready", rich_help_panel=_PROCESSES)
def worker_ready(
    live: Annotated[bool, typer.Option("--live", help="Liveness: Redis unreachable is not this pod's fault (exit 0)")]
    = False,
) -> None:
    """Exit 0 when a worker process of this host sent a heartbeat within the timeout (readiness probe)."""
    import socket

    from jobs.pools import live_on_host
    from jobs.redis import sync_client

    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set")
    try:
        beating = live_on_host(sync_client(settings.redis_url), socket.gethostname(), settings.heartbeat_timeout_ms)
    except Exception as exc:
        print(f"{'alive' if live else 'not ready'}: Redis: {type(exc).__name__}")
        # A restart would not bring Redis back; it would only cut the jobs in flight.
        raise typer.Exit(0 if live else 1) from None
    if not beating:
        print(f"not ready: no worker process of {socket.gethostname()} beat in the last "
              f"{settings.heartbeat_timeout_ms} ms")
        raise typer.Exit(1)
    print(f"ready: {len(beating)} worker process(es)")


_pass_through("simulator", "The provider simulator (development tool; `switchyard simulator --help`).")


@app.command("create-user", rich_help_panel=_ADMIN)
def create_user(
    email: Annotated[str, typer.Option(help="The user's e-mail address")],
    role: Annotated[Literal["user", "admin"], typer.Option()] = "user",
    password: Annotated[str | None, typer.Option(help="Lets the user log in (without one: API keys only)")] = None,
) -> None:
    """Add a user with the sign-up credits."""
    asyncio.run(_create_user_async(email, role, password))


@app.command("create-key", rich_help_panel=_ADMIN)
def create_key(
    email: Annotated[str, typer.Option(help="The user's e-mail address")],
    name: Annotated[str, typer.Option(help="A label for the key")] = "cli",
) -> None:
    """Create an API key for a user; the secret is printed once."""
    asyncio.run(_create_key_async(email, name))


app.add_typer(batch_app, name="batch", rich_help_panel=_CLIENT)
app.command(rich_help_panel=_CLIENT)(chat)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `switchyard` console script (and of `python -m api.cli`)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _PASS_THROUGH:
        # Dispatched before click parses anything: click would swallow a `--`, and every
        # argument (`--help` too) belongs to the wrapped program.
        _PASS_THROUGH[argv[0]](ProcessArgs(rest=argv[1:]))
        return
    app(args=argv, prog_name="switchyard")


if __name__ == "__main__":
    main()
