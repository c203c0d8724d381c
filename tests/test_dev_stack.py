"""`switchyard dev`: the newcomer's command brings everything up and takes it all down."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from scripts.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_dev_stack_serves_a_streamed_completion_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "SIMULATOR_URL") and not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_DATA_DIR"] = str(tmp_path / "data")
    port, sim_port = free_port(), free_port()
    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "dev", "--port", str(port), "--simulator-port", str(sim_port),
         "--threads", "2"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while "Switchyard is up." not in (tmp_path / "dev.log").read_text():
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.2)
        banner = (tmp_path / "dev.log").read_text()
        key = re.search(r"API key\s+(sk-\S+)", banner)
        assert key, banner
        assert f"curl -N http://127.0.0.1:{port}/v1/jobs/$JOB/events" in banner
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            job = client.post("/v1/jobs", json={"kind": "chat.completion", "input": {
                "model": "sim-small", "stream": True, "messages": [{"role": "user", "content": "hi"}]}}).json()
            with client.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
                types = [line.split(":", 1)[1].strip() for line in resp.iter_lines() if line.startswith("event:")]
        assert types[:2] == ["queued", "started"] and types[-1] == "succeeded" and "delta" in types
        children = psutil.Process(dev.pid).children(recursive=True)
        assert len(children) >= 5  # redis, simulator, api, worker (+ its process), maintenance
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(60)
    assert dev.returncode == 0, (tmp_path / "dev.log").read_text()
    assert "stopped." in (tmp_path / "dev.log").read_text()
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()  # PostgreSQL shut down
