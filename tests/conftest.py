"""Session fixtures: real PostgreSQL, Redis, simulator, API and workers.

Embedded servers start by default; set DATABASE_URL / REDIS_URL to use your
own (disposable!) servers: tests truncate tables between tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from jobs.accounts import create_api_key, create_user
from jobs.credits import credit as grant_credits
from jobs.db import migrate
from jobs.kinds import LANES
from jobs.settings import Settings, settings_from
from jobs.states import Queue
from scripts.embedded import free_port, start_postgres, start_redis
from scripts.procs import Process, start_api, start_maintenance, start_worker
from scripts.simulator import serve_in_thread

#: Every lane the session's main worker pool consumes: all but the bulk lane, which has its own pool.
INTERACTIVE_LANES = [str(q) for q in LANES if q != Queue.CHAT_BULK]

#: A job whose prompt contains this makes the worker that claims it exit at once.
CRASH_MARKER = "[[chaos:crash-worker]]"
#: ...or raise an unexpected error, as a database outage or a bug would.
ERROR_MARKER = "[[chaos:infra-error]]"


@dataclass
class Stack:
    """Everything the session started."""

    env: dict[str, str]
    settings: Settings
    api_url: str
    simulator_url: str
    log_dir: Path
    api: Process
    #: The pool of every lane but the bulk one...
    worker: Process
    #: ...and the bulk lane's own pool (batch lines), as in production: a batch never delays interactive jobs.
    bulk_worker: Process
    maintenance: Process


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """DATABASE_URL and REDIS_URL of real servers (embedded unless given)."""
    stops = []
    urls = {"DATABASE_URL": os.environ.get("DATABASE_URL", ""), "REDIS_URL": os.environ.get("REDIS_URL", "")}
    if not urls["DATABASE_URL"]:
        # A short path: the server's Unix socket lives in its data dir (108-byte limit).
        pg_dir = Path(tempfile.mkdtemp(prefix="sy-pg-"))
        urls["DATABASE_URL"], stop = start_postgres(pg_dir / "data")
        stops.append(stop)
    if not urls["REDIS_URL"]:
        urls["REDIS_URL"], proc = start_redis(None)
        stops.append(lambda: (proc.terminate(), proc.wait(10)))
    migrate(urls["DATABASE_URL"])
    yield urls
    for stop in reversed(stops):
        stop()


@pytest.fixture(scope="session")
def simulator_url() -> Iterator[str]:
    """The provider simulator, over HTTP."""
    with serve_in_thread() as url:
        yield url


@pytest.fixture(scope="session")
def stack_env(servers: dict[str, str], simulator_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for every process the tests start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OPENAI_", "ANTHROPIC_"))}
    env.update(servers)
    env.update({
        "SIMULATOR_URL": simulator_url,
        # Uploaded and generated files of the session, away from the developer's own `.switchyard`.
        "SWITCHYARD_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "SWITCHYARD_RECONCILE_AFTER_SECONDS": "2",
        "SWITCHYARD_MAINTENANCE_INTERVAL_SECONDS": "0.5",
        "SWITCHYARD_STREAM_IDLE_POLL_SECONDS": "0.5",
        "SWITCHYARD_ROUTES": str(Path(__file__).parent / "routes.toml"),
        "SWITCHYARD_RETRIES_PER_TARGET": "1",
        "SWITCHYARD_MAX_ATTEMPTS": "2",
        "SWITCHYARD_CIRCUIT_COOLDOWN_SECONDS": "2",
        "SWITCHYARD_CHAOS_CRASH_MARKER": CRASH_MARKER,
        "SWITCHYARD_CHAOS_ERROR_MARKER": ERROR_MARKER,
        "SWITCHYARD_DELIVERY_RETRIES": "1",
        # Dead letters fail their jobs a second after the fact (tests/test_operators.py holds them longer).
        "SWITCHYARD_DEAD_LETTER_HOLD_SECONDS": "1",
        # Per-key limits are tested on API processes of their own (tests/test_credits.py).
        "SWITCHYARD_RATE_LIMIT_RPM_FREE": "1000000",
        "SWITCHYARD_MAX_CONCURRENT_JOBS_FREE": "1000000",
        "STRIPE_WEBHOOK_SECRET": "whsec_test",
        "RAZORPAY_WEBHOOK_SECRET": "rzp_test_secret",
        # Callbacks may reach 127.0.0.2 (the receivers of tests/test_webhooks.py), never 127.0.0.1.
        "SWITCHYARD_WEBHOOK_ALLOW_HOSTS": "127.0.0.2",
        "SWITCHYARD_WEBHOOK_BACKOFF_SECONDS": "0.05",
        "SWITCHYARD_WEBHOOK_TIMEOUT_SECONDS": "1",
        "SWITCHYARD_KNOWLEDGE_EMBEDDING_MODEL": "t-knowledge",
        "LOG_LEVEL": "DEBUG",
    })
    return env


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API, worker pool and maintenance loop as real processes."""
    log_dir = tmp_path_factory.mktemp("logs")
    port = free_port()
    api = start_api(stack_env, port, log_dir)
    worker = start_worker(stack_env, log_dir, queues=INTERACTIVE_LANES, pool="interactive")
    bulk_worker = start_worker(stack_env, log_dir, name="bulk-worker", queues=[str(Queue.CHAT_BULK)], pool="bulk")
    maintenance = start_maintenance(stack_env, log_dir)
    stack = Stack(env=stack_env, settings=settings_from(stack_env), api_url=f"http://127.0.0.1:{port}",
                  simulator_url=stack_env["SIMULATOR_URL"], log_dir=log_dir, api=api, worker=worker,
                  bulk_worker=bulk_worker, maintenance=maintenance)
    yield stack
    for proc in (stack.maintenance, stack.bulk_worker, stack.worker, stack.api):
        proc.stop()


@pytest.fixture(autouse=True)
def _clean_db(request: pytest.FixtureRequest) -> None:
    """Each test that touches the database starts with empty tables."""
    if "servers" not in request.fixturenames:
        return
    url = request.getfixturevalue("servers")["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        for attempt in range(5):
            try:
                conn.execute("TRUNCATE users, api_keys, jobs, job_attempts, audit_log CASCADE")
                return
            except psycopg.errors.DeadlockDetected:
                # A process still finishing the previous test's jobs locked the tables in another
                # order; PostgreSQL picked the TRUNCATE to abort. Its work is about to end: again.
                if attempt == 4:
                    raise
                time.sleep(0.2)


@dataclass
class User:
    """A user with an API key."""

    id: uuid.UUID
    email: str
    key: str


async def make_user(database_url: str, role: str = "user", credits: int = 10_000_000) -> User:
    """Create a user with `credits` and an API key, directly in the database."""
    email = f"{uuid.uuid4().hex[:10]}@test.local"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        user_id = await create_user(conn, email, role)
        _, key = await create_api_key(conn, user_id, "test")
        if credits:
            await grant_credits(conn, user_id, "grant", credits, reference=f"test:{user_id}")
    return User(id=user_id, email=email, key=key)


@pytest.fixture
async def user(servers: dict[str, str]) -> User:
    return await make_user(servers["DATABASE_URL"])


@pytest.fixture
async def other_user(servers: dict[str, str]) -> User:
    return await make_user(servers["DATABASE_URL"])


def nodelay_transport(**kwargs: Any) -> httpx.AsyncHTTPTransport:
    """A transport with TCP_NODELAY: httpx writes a POST's headers and body separately, and
    Nagle's algorithm plus delayed ACKs would add ~40 ms to every request with a body."""
    return httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], **kwargs)


@pytest.fixture
async def client(stack: Stack, user: User) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the API, authenticated as `user`."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, transport=nodelay_transport(),
                                 headers={"Authorization": f"Bearer {user.key}"}) as c:
        yield c


@pytest.fixture
async def admin(stack: Stack) -> User:
    """An admin with an API key."""
    return await make_user(stack.env["DATABASE_URL"], role="admin")


@pytest.fixture
async def admin_client(stack: Stack, admin: User) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the session's API authenticated as `admin`."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {admin.key}"}) as c:
        yield c


@pytest.fixture
def no_lockouts(redis_client: redis.Redis) -> Iterator[None]:
    """No login lockout before or after the test (failed logins of tests all come from 127.0.0.1)."""

    def clear() -> None:
        keys = list(redis_client.scan_iter("login:fail:*"))
        if keys:
            redis_client.delete(*keys)

    clear()
    yield
    clear()


@pytest.fixture
def redis_client(servers: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(servers["REDIS_URL"])
    yield client
    client.close()


def chat_job(content: str = "Hello there", *, model: str = "sim-small", stream: bool = False,
             **extra: Any) -> dict[str, Any]:
    """A `chat.completion` request body."""
    return {"kind": "chat.completion",
            "input": {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}], **extra}}


async def wait_for_status(client: httpx.AsyncClient, job_id: str, statuses: set[str] | None = None,
                          timeout: float = 30) -> dict[str, Any]:
    """Poll a job until it reaches one of `statuses` (default: any terminal state)."""
    statuses = statuses or {"succeeded", "failed", "cancelled"}
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if body.get("status") in statuses:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} stuck in {body.get('status')}: {body}")
        await asyncio.sleep(0.05)
