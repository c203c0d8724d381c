"""Retries, fallback and shared limits, each caused through the simulator over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis

from scripts.procs import start_worker
from tests.conftest import Stack, User, chat_job, wait_for_status
from tests.test_streaming import sse_events


@pytest.fixture(autouse=True)
def _fresh_provider_state(stack: Stack, redis_client: redis.Redis) -> None:
    """No breaker, budget or simulator fault carries over from another test."""
    for key in redis_client.scan_iter("sy:cb:*"):
        redis_client.delete(key)
    for key in redis_client.scan_iter("sy:rl:*"):
        redis_client.delete(key)
    httpx.post(f"{stack.simulator_url}/_sim/reset")


def sim_calls(stack: Stack, model: str) -> int:
    """Chat requests the simulator received for `model`, over any protocol."""
    stats = httpx.get(f"{stack.simulator_url}/_sim/stats").json()
    return sum(per_model.get(model, {}).get("total", 0)
               for api, per_model in stats["apis"].items() if "chat" in api or "messages" in api)


def key() -> str:
    return uuid.uuid4().hex[:8]


def at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def run(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    job = (await client.post("/v1/jobs", json=body)).json()
    events = await sse_events(client, f"/v1/jobs/{job['id']}/events")
    return await wait_for_status(client, job["id"]), events


async def test_429_retry_after_is_honoured(client: httpx.AsyncClient) -> None:
    done, events = await run(client, chat_job(f"[[sim: fault=429; retry_after=1; times=1; key={key()}]] hi"))
    assert done["status"] == "succeeded"
    first, second = done["attempts"]
    assert (first["outcome"], first["error_code"], second["outcome"]) == ("error", "provider_overloaded", "ok")
    assert at(second["started_at"]) - at(first["started_at"]) >= 0.95  # waited the Retry-After
    retrying = [e for e in events if e["type"] == "retrying"]
    assert len(retrying) == 1 and retrying[0]["data"]["wait_seconds"] == 1.0
    assert retrying[0]["data"]["reason"] == "rate_limited"


async def test_500_then_success_on_retry(client: httpx.AsyncClient) -> None:
    done, events = await run(client, chat_job(f"[[sim: fault=500; times=1; key={key()}]] hi"))
    assert done["status"] == "succeeded"
    assert [a["outcome"] for a in done["attempts"]] == ["error", "ok"]
    assert {a["model"] for a in done["attempts"]} == {"sim-small"}
    assert "fallback" not in [e["type"] for e in events]


async def test_hang_times_out_then_falls_back_to_another_protocol(client: httpx.AsyncClient, stack: Stack) -> None:
    started = time.monotonic()
    done, events = await run(client, chat_job("[[sim: fault=hang; model=fb-primary]] hello", model="t-fallback"))
    assert done["status"] == "succeeded"
    attempts = done["attempts"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [
        ("fb-primary", "error"), ("fb-primary", "error"), ("fb-secondary", "ok")]
    assert all(0.9 < a["latency_ms"] / 1000 < 3 for a in attempts[:2])  # the 1 s target timeout
    assert done["result"]["provider"] == "sim-anthropic"
    fallback = [e for e in events if e["type"] == "fallback"]
    assert fallback[0]["data"] == {"from": "sim:fb-primary", "to": "sim-anthropic:fb-secondary",
                                   "reason": "provider_overloaded"}
    assert time.monotonic() - started < 10


async def test_stream_cut_before_first_token_falls_back_silently(client: httpx.AsyncClient) -> None:
    done, events = await run(client, chat_job("[[sim: fault=cut; after=0; model=fb-primary]] story",
                                              model="t-fallback", stream=True))
    assert done["status"] == "succeeded"
    types = [e["type"] for e in events]
    assert "reset" not in types
    assert "".join(e["data"]["text"] for e in events if e["type"] == "delta") == done["result"]["content"]


async def test_stream_cut_after_tokens_resets_then_completes(client: httpx.AsyncClient) -> None:
    done, events = await run(client, chat_job("[[sim: fault=cut; after=3; model=fb-primary]] story",
                                              model="t-fallback", stream=True))
    assert done["status"] == "succeeded"
    types = [e["type"] for e in events]
    assert types.count("reset") == 2  # the first try and its retry each streamed 3 tokens
    after_last_reset = events[len(types) - types[::-1].index("reset"):]
    text = "".join(e["data"]["text"] for e in after_last_reset if e["type"] == "delta")
    assert text == done["result"]["content"]
    # Charges count only the attempt that produced the result; the partial ones are on their rows.
    failed = [a for a in done["attempts"] if a["outcome"] == "error"]
    assert all(a["usage"]["estimated"] and a["usage"]["completion_tokens"] > 0 for a in failed)
    assert done["usage"] == done["attempts"][-1]["usage"]


async def test_anthropic_and_ollama_targets_stream_too(client: httpx.AsyncClient, stack: Stack) -> None:
    # OpenAI-wire target answers 503, Anthropic-wire target 529 (overloaded): the Ollama wire serves it.
    for model, fault in (("fb-primary", "503"), ("fb-secondary", "529")):
        httpx.post(f"{stack.simulator_url}/_sim/faults", json={"model": model, "directives": f"fault={fault}"})
    done, events = await run(client, chat_job("go", model="t-fallback", stream=True))
    assert done["status"] == "succeeded"
    assert done["result"]["provider"] == "sim-ollama"
    assert "".join(e["data"]["text"] for e in events if e["type"] == "delta") == done["result"]["content"]
    assert done["usage"]["completion_tokens"] == len(done["result"]["content"].split())


async def test_invalid_request_fails_fast_without_fallback(client: httpx.AsyncClient) -> None:
    done, events = await run(client, chat_job("[[sim: fault=400]] bad", model="t-fallback"))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "provider_rejected"
    assert len(done["attempts"]) == 1
    assert not {"fallback", "retrying"} & {e["type"] for e in events}


async def test_fallback_false_stays_on_the_first_target(client: httpx.AsyncClient) -> None:
    done, _ = await run(client, chat_job("[[sim: fault=500; model=fb-primary]] x", model="t-fallback",
                                         fallback=False))
    assert done["status"] == "failed"
    assert {a["model"] for a in done["attempts"]} == {"fb-primary"}


async def test_prompt_over_a_targets_context_window_skips_it(client: httpx.AsyncClient, stack: Stack) -> None:
    done, _ = await run(client, chat_job("a prompt that is clearly longer than eight tokens " * 3, model="t-context"))
    assert done["status"] == "succeeded"
    assert done["result"]["provider_model"] == "ctx-large"
    assert sim_calls(stack, "ctx-small") == 0


async def test_open_circuit_is_skipped_by_every_worker_then_probed(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    httpx.post(f"{stack.simulator_url}/_sim/faults", json={"model": "cb-primary", "directives": "fault=500"})
    second_pool = start_worker(stack.env, stack.log_dir, name="worker-circuit")
    try:
        # 5 failures open it: 3 jobs × 2 tries, sequentially so the count is exact.
        for _ in range(3):
            done, _ = await run(client, chat_job(f"trip {key()}", model="t-circuit"))
            assert done["status"] == "succeeded" and done["result"]["provider_model"] == "cb-backup"
        calls_when_open = sim_calls(stack, "cb-primary")
        assert calls_when_open == 5
        ids = [(await client.post("/v1/jobs", json=chat_job(f"skip {i}", model="t-circuit"))).json()["id"]
               for i in range(8)]
        workers = set()
        for job_id in ids:
            done = await wait_for_status(client, job_id)
            assert done["result"]["provider_model"] == "cb-backup"
            events = await sse_events(client, f"/v1/jobs/{job_id}/events")
            workers.add(next(e["data"]["worker"] for e in events if e["type"] == "started"))
            assert next(e for e in events if e["type"] == "fallback")["data"]["reason"] == "circuit_open"
        assert sim_calls(stack, "cb-primary") == calls_when_open  # no worker called it while open
        assert len(workers) == 2  # both pools took jobs, both respected the shared breaker
        # After the 2 s cooldown one probe decides; the target has recovered.
        httpx.delete(f"{stack.simulator_url}/_sim/faults")
        await asyncio.sleep(2.2)
        done, _ = await run(client, chat_job("probe", model="t-circuit"))
        assert done["result"]["provider_model"] == "cb-primary"
        done, _ = await run(client, chat_job("closed again", model="t-circuit"))
        assert done["result"]["provider_model"] == "cb-primary"
    finally:
        second_pool.stop()


async def test_rate_limit_holds_across_two_worker_processes(client: httpx.AsyncClient, stack: Stack) -> None:
    # Start well inside a minute window so the budget cannot reset mid-test.
    if time.time() % 60 > 45:
        await asyncio.sleep(61 - time.time() % 60)
    second_pool = start_worker(stack.env, stack.log_dir, name="worker-ratelimit", processes=2)
    try:
        ids = [r.json()["id"] for r in await asyncio.gather(*[
            client.post("/v1/jobs", json=chat_job(f"limited {i}", model="t-limited")) for i in range(10)])]
        done = [await wait_for_status(client, job_id) for job_id in ids]
    finally:
        second_pool.stop()
    assert {d["status"] for d in done} == {"succeeded"}
    served = [d["result"]["provider_model"] for d in done]
    assert served.count("rl-primary") == 3  # rpm = 3: never more, whichever process ran the job
    assert sim_calls(stack, "rl-primary") == 3
    limited = [d for d in done if d["result"]["provider_model"] == "rl-backup"]
    assert len(limited) == 7


async def test_models_endpoint_lists_routes(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    ids = [m["id"] for m in models["data"]]
    assert "sim-small" in ids and "t-fallback" in ids
    fb = next(m for m in models["data"] if m["id"] == "t-fallback")
    assert [t["provider"] for t in fb["targets"]] == ["sim", "sim-anthropic", "sim-ollama"]


async def test_worker_and_api_metrics_are_exposed(client: httpx.AsyncClient, stack: Stack, user: User) -> None:
    await run(client, chat_job("count me"))
    text = (await client.get("/metrics")).text
    assert 'switchyard_jobs_submitted_total{kind="chat.completion",queue="chat"}' in text
    assert 'switchyard_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in text
    assert 'switchyard_http_requests_total{method="GET",route="/v1/jobs/{job_id}/events",status="200"}' in text
    assert 'switchyard_queue_depth{queue="chat.bulk"} 0.0' in text
    # The worker pool's exposition server merges its processes' metrics (multiprocess mode).
    worker_metrics = httpx.get(f"http://127.0.0.1:{stack.worker.env['SWITCHYARD_WORKER_METRICS_PORT']}/").text
    assert 'switchyard_provider_attempts_total{outcome="ok",target="sim:sim-small"}' in worker_metrics
    assert 'switchyard_jobs_total{kind="chat.completion",status="succeeded"}' in worker_metrics
    assert "dramatiq_messages_total" in worker_metrics


@pytest.mark.parametrize("provider_kind", ["openai", "anthropic", "ollama"])
async def test_our_own_failure_mid_stream_is_not_blamed_on_the_provider(stack: Stack, provider_kind: str) -> None:
    """A delta we cannot publish (Redis out of connections) surfaces as itself: no provider error, no circuit."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from jobs.kinds import Message
    from workers.providers.anthropic import AnthropicProvider
    from workers.providers.base import TargetRequest
    from workers.providers.ollama import OllamaProvider
    from workers.providers.openai import OpenAIProvider

    sim = stack.env["SIMULATOR_URL"]
    provider = {"openai": lambda: OpenAIProvider("sim", base_url=f"{sim}/v1", api_key="sim"),
                "anthropic": lambda: AnthropicProvider("sim-anthropic", base_url=sim, api_key="sim"),
                "ollama": lambda: OllamaProvider("sim-ollama", base_url=sim)}[provider_kind]()
    request = TargetRequest(model="sim-small", messages=[Message(role="user", content="hello there")], max_tokens=16)
    seen: list[str] = []

    async def publish(text: str) -> None:
        seen.append(text)
        raise RedisConnectionError("Too many connections")

    with pytest.raises(RedisConnectionError, match="Too many connections"):
        await provider.chat(request, on_delta=publish)
    assert len(seen) == 1  # the first delta arrived from the provider; our side failed on it
