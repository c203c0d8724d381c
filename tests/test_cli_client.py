"""The client commands of the `switchyard` CLI (`chat`, `batch …`), run as processes against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from api import cli_client
from api.cli_client import api_base
from tests.conftest import Stack, User


async def run_client(stack: Stack, user: User, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`switchyard ARGS` pointed at the stack with the user's key (through the environment, as a user would)."""
    env = {**stack.env, "SWITCHYARD_BASE_URL": stack.api_url, "SWITCHYARD_API_KEY": user.key, "COLUMNS": "200"}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "api.cli", *args], env=env,
                                   capture_output=True, text=True, timeout=timeout)


def chat_line(custom_id: str, content: str, max_tokens: int = 5) -> dict[str, Any]:
    """One line of a batch input file."""
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "sim-small", "messages": [{"role": "user", "content": content}],
                     "max_tokens": max_tokens}}


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_base_url_is_accepted_with_or_without_v1() -> None:
    for url in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert api_base(url) == "http://h:8000/v1"


def test_client_commands_without_a_key_say_how_to_give_one() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result = subprocess.run([sys.executable, "-m", "api.cli", "batch", "list"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "SWITCHYARD_API_KEY" in result.stderr


# --- chat


async def test_chat_streams_the_same_text_the_api_returns(stack: Stack, user: User,
                                                          client: httpx.AsyncClient) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about switchyards"}]
    response = await client.post("/v1/chat/completions", json={"model": "sim-small", "messages": messages,
                                                               "max_tokens": 12})
    assert response.status_code == 200, response.text
    expected = response.json()["choices"][0]["message"]["content"]
    assert expected

    result = await run_client(stack, user, "chat", "Tell me about switchyards", "--model", "sim-small",
                              "--system", "Be brief.", "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


async def test_chat_with_an_unknown_model_prints_the_code_and_fails(stack: Stack, user: User) -> None:
    result = await run_client(stack, user, "chat", "hello", "--model", "no-such-model")
    assert result.returncode != 0
    assert "model_not_found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


# --- batches


async def test_a_big_input_file_is_uploaded_in_chunks_and_arrives_whole(
    stack: Stack, user: User, tmp_path: Path, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text((json.dumps(chat_line("x", "y" * 1000)) + "\n") * 2000)  # ~2 MB: above the progress bar's 1 MiB
    reads: list[int] = []
    readinto = cli_client._ReadProgress.readinto

    def recording(self: cli_client._ReadProgress, buffer: Any) -> int:
        reads.append(n := readinto(self, buffer))
        return n

    monkeypatch.setattr(cli_client._ReadProgress, "readinto", recording)
    sdk = OpenAI(base_url=api_base(stack.api_url), api_key=user.key)
    uploaded = await asyncio.to_thread(cli_client._upload, sdk, big)
    assert (uploaded.bytes, uploaded.purpose) == (big.stat().st_size, "batch")
    assert len(reads) > 10 and max(reads) < big.stat().st_size // 10, "the file must be streamed, not read whole"
    assert (await client.get(f"/v1/files/{uploaded.id}/content")).content == big.read_bytes()


async def test_batch_submit_wait_writes_the_output_next_to_the_input(stack: Stack, user: User, tmp_path: Path,
                                                                     client: httpx.AsyncClient) -> None:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [chat_line(f"r{i}", f"Question {i}") for i in range(1, 21)])
    result = await run_client(stack, user, "batch", "submit", str(prompts), "--wait", "--poll", "0.2",
                              "--metadata", "run=cli-test")
    assert result.returncode == 0, result.stdout + result.stderr
    batch_id = result.stdout.splitlines()[0]
    assert batch_id.startswith("batch_"), result.stdout

    output = read_jsonl(tmp_path / f"{batch_id}_output.jsonl")
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(1, 21))
    assert all(line["response"]["status_code"] == 200 for line in output), output
    # The progress lines and the summary carry the counts.
    assert "20/20 done, 0 failed" in result.stderr, result.stderr
    assert f"wrote {tmp_path / f'{batch_id}_output.jsonl'} (20 lines)" in result.stdout

    batch = (await client.get(f"/v1/batches/{batch_id}")).json()
    assert batch["status"] == "completed" and batch["metadata"] == {"run": "cli-test"}
    assert batch["request_counts"] == {"total": 20, "completed": 20, "failed": 0}


async def test_a_submitted_batch_can_be_watched_listed_and_downloaded_later(stack: Stack, user: User,
                                                                             tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "later.jsonl", [chat_line(f"q{i}", f"Later {i}") for i in range(5)])
    submitted = await run_client(stack, user, "batch", "submit", str(prompts))
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert batch_id.startswith("batch_"), submitted.stdout

    watched = await run_client(stack, user, "batch", "status", batch_id, "--wait", "--poll", "0.2",
                               "--output-dir", str(tmp_path / "watched"))
    assert watched.returncode == 0, watched.stdout + watched.stderr
    first = (tmp_path / "watched" / f"{batch_id}_output.jsonl").read_text()
    assert len(first.splitlines()) == 5

    listed = await run_client(stack, user, "batch", "list", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    assert batch_id in listed.stdout and "completed" in listed.stdout and "5/5" in listed.stdout

    shown = await run_client(stack, user, "batch", "status", batch_id)
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout and "5/5 done, 0 failed" in shown.stdout

    downloaded = await run_client(stack, user, "batch", "download", batch_id, "--output-dir", str(tmp_path / "again"))
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "again" / f"{batch_id}_output.jsonl").read_text() == first


async def test_a_cancelled_batch_ends_cancelled_and_waiting_on_it_fails(stack: Stack, user: User,
                                                                         tmp_path: Path) -> None:
    slow = [chat_line(f"s{i}", f"[[sim: ttft_ms=3000]] slow {i}") for i in range(20)]
    submitted = await run_client(stack, user, "batch", "submit", str(write_jsonl(tmp_path / "slow.jsonl", slow)))
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()

    cancelled = await run_client(stack, user, "batch", "cancel", batch_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split() in ([batch_id, "cancelling"], [batch_id, "cancelled"])

    watched = await run_client(stack, user, "batch", "status", batch_id, "--wait", "--poll", "0.2",
                               "--output-dir", str(tmp_path))
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "cancelled" in watched.stdout


async def test_a_batch_that_fails_validation_prints_its_errors_and_fails(stack: Stack, user: User,
                                                                         tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(chat_line("ok", "fine")) + "\n" + "{not json\n")
    result = await run_client(stack, user, "batch", "submit", str(bad), "--wait", "--poll", "0.2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "line 2" in result.stderr, result.stderr
