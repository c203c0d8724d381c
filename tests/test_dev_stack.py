"""`switchyard dev`: the newcomer's command brings everything up and takes it all down."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil

from scripts.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


def _search_the_example_pdf(base: str, key: str) -> None:
    """The README's file walk-through: upload the example PDF, follow its processing, search it two ways."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        pdf = (ROOT / "docs" / "examples" / "field-guide.pdf").read_bytes()
        file = client.post("/v1/files", files={"file": ("field-guide.pdf", pdf)}, data={"purpose": "assistants"})
        assert file.status_code == 200 and file.json()["status"] == "processing", file.text
        with client.stream("GET", f"/v1/jobs/{file.json()['process_job_id']}/events") as resp:
            events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
        stages = [e["data"]["stage"] for e in events if e["type"] == "progress"]
        assert stages[:3] == ["extracting", "chunking", "embedding"] and events[-1]["type"] == "succeeded"
        hits = client.post("/v1/search", json={"query": "what does a 202 promise"}).json()["data"]
        assert hits[0]["filename"] == "field-guide.pdf" and "202 response is a promise" in hits[0]["text"]
    sdk = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    store = sdk.vector_stores.create(name="guide", file_ids=[file.json()["id"]])
    page = sdk.vector_stores.search(vector_store_id=store.id, query="part number SY-7731")
    assert page.data[0].file_id == file.json()["id"] and "SY-7731" in page.data[0].content[0].text


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
        assert "-F file=@docs/examples/field-guide.pdf" in banner
        _search_the_example_pdf(f"http://127.0.0.1:{port}", key.group(1))
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
