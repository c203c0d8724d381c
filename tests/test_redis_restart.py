"""Redis restarts (empty, as a memory-only Redis does): every accepted job still finishes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from scripts.embedded import free_port, start_redis
from scripts.procs import Process, start_api, start_maintenance, start_worker
from tests.conftest import Stack, User, chat_job, wait_for_status
from tests.test_streaming import sse_events


@dataclass
class RedisStack:
    api_url: str
    port: int
    redis: object
    env: dict[str, str]


def worker_ready(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`switchyard worker-ready`, the worker pods' probe, against this stack's Redis."""
    return subprocess.run([sys.executable, "-m", "api.cli", "worker-ready"], env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.fixture(scope="module")
def own_redis_stack(stack: Stack) -> Iterator[RedisStack]:
    """API, worker pool and maintenance on a Redis of their own that the test can restart."""
    port = free_port()
    _, redis_proc = start_redis(None, port=port)
    env = {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    api_port = free_port()
    procs: list[Process] = [start_api(env, api_port, stack.log_dir, name="api-redis-restart"),
                            start_worker(env, stack.log_dir, name="worker-redis-restart"),
                            start_maintenance(env, stack.log_dir)]
    state = RedisStack(api_url=f"http://127.0.0.1:{api_port}", port=port, redis=redis_proc, env=env)
    try:
        yield state
    finally:
        for proc in reversed(procs):
            proc.stop()
        state.redis.terminate()  # type: ignore[attr-defined]


async def test_jobs_survive_a_redis_restart(own_redis_stack: RedisStack, user: User) -> None:
    headers = {"Authorization": f"Bearer {user.key}"}
    async with httpx.AsyncClient(base_url=own_redis_stack.api_url, headers=headers, timeout=30) as c:
        # In flight when Redis dies: its events and its Dramatiq message vanish with Redis.
        before = (await c.post("/v1/jobs", json=chat_job("[[sim: ttft_ms=1500]] before", stream=True))).json()
        await asyncio.sleep(0.5)
        assert worker_ready(own_redis_stack.env).returncode == 0
        own_redis_stack.redis.kill()  # type: ignore[attr-defined]
        own_redis_stack.redis.wait()  # type: ignore[attr-defined]
        # Not ready while Redis is down: the API's /readyz names it, the worker probe fails.
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error"), ready.text
        assert ready.json()["checks"]["postgres"] == "ok" and ready.json()["checks"]["schema"] == "ok"
        probe = worker_ready(own_redis_stack.env)
        assert probe.returncode == 1 and "Redis" in probe.stdout, probe
        _, own_redis_stack.redis = start_redis(None, port=own_redis_stack.port)

        # The API's pooled connections are dead; its client retries the command on a new one.
        after = await c.post("/v1/jobs", json=chat_job("after the restart", stream=True))
        assert after.status_code == 202, after.text

        done_before = await wait_for_status(c, before["id"], timeout=60)
        done_after = await wait_for_status(c, after.json()["id"], timeout=60)
        assert done_before["status"] == "succeeded", done_before
        assert done_after["status"] == "succeeded", done_after
        # Live events work again for new jobs (pub/sub or, failing that, the replay stream).
        events = await sse_events(c, f"/v1/jobs/{after.json()['id']}/events")
        assert events[-1]["type"] == "succeeded"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        # Ready again, by themselves: the API at once, the worker at its next heartbeat.
        assert (await c.get("/readyz")).status_code == 200
        deadline = asyncio.get_running_loop().time() + 10
        while (probe := worker_ready(own_redis_stack.env)).returncode != 0:
            assert asyncio.get_running_loop().time() < deadline, probe
            await asyncio.sleep(0.5)
