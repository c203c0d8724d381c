"""Chaos: SIGKILL the worker pool running a streaming job; measure how fast the job recovers.

Default settings (heartbeat timeout 10 s, lease 10 s, reconciler 10 s,
maintenance every 2 s) unless overridden by the environment. Each round: one
pool takes a ~8 s streaming job, is SIGKILLed after its first token, and a
second pool finishes the job; prints the time from the kill to the job's
second claim and to its completion, and checks it completed exactly once.

    .venv/bin/python -m scripts.chaos.kill_worker [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from scripts.embedded import free_port, start_postgres, start_redis
from scripts.procs import start_api, start_maintenance, start_worker
from scripts.simulator import serve_in_thread


def _first_delta(client: httpx.Client, job_id: str) -> None:
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
        for line in resp.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["type"] == "delta":
                return


def _round(client: httpx.Client, env: dict[str, str], log_dir: Path, n: int) -> tuple[float, float]:
    victim = start_worker(env, log_dir, name=f"victim-{n}")
    body = {"kind": "chat.completion", "input": {"model": "sim-small", "stream": True,
            "messages": [{"role": "user", "content": f"[[sim: tps=5; tokens=40]] round {n}"}]}}
    job = client.post("/v1/jobs", json=body).json()
    _first_delta(client, job["id"])
    survivor = start_worker(env, log_dir, name=f"survivor-{n}")
    killed = time.monotonic()
    victim.kill()
    reclaimed = done_at = 0.0
    try:
        while True:
            state = client.get(f"/v1/jobs/{job['id']}").json()
            if not reclaimed and state["claims"] >= 2:
                reclaimed = time.monotonic() - killed
            if state["status"] in ("succeeded", "failed", "cancelled"):
                done_at = time.monotonic() - killed
                break
            time.sleep(0.05)
    finally:
        survivor.stop()
    assert state["status"] == "succeeded" and state["claims"] == 2, state
    return reclaimed, done_at


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from jobs.db import migrate
    from tests.conftest import make_user

    tmp = Path(tempfile.mkdtemp(prefix="sy-chaos-"))
    db_url, stop_pg = start_postgres(tmp / "pg")
    redis_url, redis_proc = start_redis(None)
    migrate(db_url)
    user = asyncio.run(make_user(db_url, role="admin"))  # admins are not rate limited: we poll fast
    results = []
    try:
        with serve_in_thread() as sim_url:
            env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "SIMULATOR_URL": sim_url,
                   "LOG_LEVEL": "INFO"}
            port = free_port()
            api = start_api(env, port, tmp)
            maintenance = start_maintenance(env, tmp)
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                  headers={"Authorization": f"Bearer {user.key}"}) as client:
                    for n in range(args.rounds):
                        results.append(_round(client, env, tmp, n))
                        print(f"round {n + 1}: re-claimed {results[-1][0]:.1f}s after SIGKILL, "
                              f"completed after {results[-1][1]:.1f}s", flush=True)
            finally:
                maintenance.stop()
                api.stop()
    finally:
        redis_proc.terminate()
        stop_pg()
    reclaims = [r[0] for r in results]
    print(f"\nSIGKILL -> second claim: median {statistics.median(reclaims):.1f}s, max {max(reclaims):.1f}s "
          f"over {len(results)} rounds (each job then streams ~8 s from the start)")


if __name__ == "__main__":
    main()
