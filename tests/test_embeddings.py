"""Embeddings: `POST /v1/embeddings` with the real `openai` SDK, and native `embedding` jobs."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import openai
import pytest

from scripts.simulator.text import embed
from tests.conftest import Stack, User, make_user, wait_for_status
from tests.test_openai_compat import sdk
from tests.test_routing import run


def close(got: list[float], want: list[float]) -> bool:
    """Equal to float32 precision (base64 vectors are float32)."""
    return len(got) == len(want) and all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True))


def embedding_job(texts: str | list[str], model: str = "t-embed", **extra: Any) -> dict[str, Any]:
    """A native `embedding` job body."""
    return {"kind": "embedding", "input": {"model": model, "input": texts, **extra}}


async def test_sdk_embeds_a_string_and_a_list_as_floats_and_base64(stack: Stack, user: User) -> None:
    client = sdk(stack, user)
    one = await client.embeddings.create(model="t-embed", input="rail yards at dawn", encoding_format="float")
    assert one.object == "list" and one.model == "t-embed"
    assert [d.index for d in one.data] == [0] and close(one.data[0].embedding, embed("rail yards at dawn", 256))
    assert one.usage.prompt_tokens == one.usage.total_tokens == 4  # words, as the simulator counts
    texts = ["first text", "second text here", "third"]
    floats = await client.embeddings.create(model="t-embed", input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert all(close(d.embedding, embed(t, 256)) for d, t in zip(floats.data, texts, strict=True))
    # Without encoding_format the SDK asks for base64 and decodes it itself...
    default = await client.embeddings.create(model="t-embed", input=texts)
    assert all(close(d.embedding, embed(t, 256)) for d, t in zip(default.data, texts, strict=True))
    # ...and asked for explicitly, it hands over OpenAI's little-endian float32s as they came.
    raw = await client.embeddings.create(model="t-embed", input=texts, encoding_format="base64")
    for d, text in zip(raw.data, texts, strict=True):
        packed = base64.b64decode(d.embedding)  # type: ignore[arg-type]
        assert close(list(struct.unpack(f"<{len(packed) // 4}f", packed)), embed(text, 256))


async def test_dimensions_shorten_the_vectors(stack: Stack, user: User) -> None:
    response = await sdk(stack, user).embeddings.create(model="t-embed", input=["short", "vectors"], dimensions=64)
    assert [len(d.embedding) for d in response.data] == [64, 64]
    assert close(response.data[1].embedding, embed("vectors", 64))


async def test_more_inputs_than_max_inputs_take_several_calls_in_order(stack: Stack, user: User,
                                                                       client: httpx.AsyncClient) -> None:
    texts = [f"text number {i}" for i in range(10)]  # t-embed takes 4 per call: 4 + 4 + 2
    response = await sdk(stack, user).embeddings.create(model="t-embed", input=texts, encoding_format="float")
    assert all(close(d.embedding, embed(t, 256)) for d, t in zip(response.data, texts, strict=True))
    assert response.usage.prompt_tokens == 30
    job_id = (await client.get("/v1/jobs", params={"kind": "embedding"})).json()["data"][0]["id"]
    job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert [(a["model"], a["outcome"], a["usage"]["prompt_tokens"]) for a in job["attempts"]] == [
        ("emb-small", "ok", 12), ("emb-small", "ok", 12), ("emb-small", "ok", 6)]


async def test_native_embedding_job_succeeds_with_vectors_and_is_charged(client: httpx.AsyncClient) -> None:
    before = (await client.get("/v1/credits")).json()["balance"]
    resp = await client.post("/v1/jobs", json=embedding_job(["one two three", "four five"]))
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert (job["kind"], job["queue"], job["status"]) == ("embedding", "embeddings", "queued")
    done = await wait_for_status(client, job["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert close(result["data"][0], embed("one two three", 256)) and close(result["data"][1], embed("four five", 256))
    assert (result["model"], result["provider"], result["provider_model"]) == ("t-embed", "sim", "emb-small")
    assert done["usage"]["prompt_tokens"] == 5
    # One input token costs one credit on t-embed; the rest of the reservation came back.
    assert (await client.get("/v1/credits")).json() == {"balance": before - 5, "reserved": 0,
                                                        "object": "credit_balance"}
    ledger = (await client.get("/v1/credits/transactions")).json()["data"]
    settle = next(e for e in ledger if e["kind"] == "settle" and e["job_id"] == job["id"])
    assert settle["amount"] == 5 and settle["model"] == "t-embed"


async def test_bulk_embedding_job_runs_on_the_bulk_lane(client: httpx.AsyncClient) -> None:
    job = (await client.post("/v1/jobs", json=embedding_job("bulk text") | {"priority": "bulk"})).json()
    assert job["queue"] == "chat.bulk"
    assert (await wait_for_status(client, job["id"]))["status"] == "succeeded"


async def test_failing_target_falls_back_to_the_ollama_wire(client: httpx.AsyncClient) -> None:
    texts = ["[[sim: fault=500; model=emb-primary]] first", "second"]
    done, events = await run(client, embedding_job(texts, model="t-embed-fallback"))
    assert done["status"] == "succeeded", done
    assert [(a["model"], a["outcome"]) for a in done["attempts"]] == [
        ("emb-primary", "error"), ("emb-primary", "error"), ("emb-secondary", "ok")]
    assert (done["result"]["provider"], done["result"]["provider_model"]) == ("sim-ollama", "emb-secondary")
    assert all(close(v, embed(t, 256)) for v, t in zip(done["result"]["data"], texts, strict=True))
    fallback = [e["data"] for e in events if e["type"] == "fallback"]
    assert fallback == [{"from": "sim:emb-primary", "to": "sim-ollama:emb-secondary",
                         "reason": "provider_overloaded"}]


async def test_a_rejected_call_fails_the_job_without_fallback(client: httpx.AsyncClient) -> None:
    done, events = await run(client, embedding_job(["[[sim: fault=401]] no"], model="t-embed-fallback"))
    assert done["status"] == "failed" and done["error"]["code"] == "provider_rejected"
    assert [a["outcome"] for a in done["attempts"]] == ["error"]
    assert "fallback" not in [e["type"] for e in events]


async def test_models_of_the_other_mode_are_not_found(stack: Stack, user: User) -> None:
    client = sdk(stack, user)
    with pytest.raises(openai.NotFoundError) as chat_model:
        await client.embeddings.create(model="sim-small", input="x")
    assert chat_model.value.code == "model_not_found"
    assert "is a chat model; embedding models: t-embed, t-embed-fallback" in chat_model.value.message
    with pytest.raises(openai.NotFoundError) as embed_model:
        await client.chat.completions.create(model="t-embed", messages=[{"role": "user", "content": "x"}])
    assert embed_model.value.code == "model_not_found"


async def test_invalid_inputs_are_refused_with_their_code(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"model": "t-embed", "input": []}, 400, "validation_error"),
        ({"model": "t-embed", "input": ["x"] * 2049}, 400, "validation_error"),
        ({"model": "t-embed", "input": [1, 2, 3]}, 400, "validation_error"),
        ({"model": "t-embed", "input": [[1, 2], [3]]}, 400, "validation_error"),
        ({"model": "t-embed", "input": "x", "encoding_format": "int8"}, 400, "validation_error"),
        ({"model": "t-embed", "input": ["a", ""]}, 422, "invalid_request"),
        ({"model": "t-embed-fixed", "input": "x", "dimensions": 64}, 422, "invalid_request"),
        # 13 × 32k characters: under the body limit, over SWITCHYARD_MAX_PROMPT_CHARS (400k).
        ({"model": "t-embed", "input": ["y" * 32_000] * 13}, 413, "prompt_too_large"),
    ]
    for body, status, code in cases:
        resp = await client.post("/v1/embeddings", json=body)
        assert (resp.status_code, resp.json()["error"]["code"]) == (status, code), (body["input"][:3], resp.text)
    token_ids = (await client.post("/v1/embeddings", json={"model": "t-embed", "input": [1, 2]})).json()
    assert "token-id arrays are not supported" in token_ids["error"]["message"]
    native = await client.post("/v1/jobs", json=embedding_job([]))
    assert native.status_code == 400 and native.json()["code"] == "validation_error"


async def test_no_credits_is_402(stack: Stack) -> None:
    poor = await make_user(stack.env["DATABASE_URL"], credits=0)
    with pytest.raises(openai.APIStatusError) as short:
        await sdk(stack, poor).embeddings.create(model="t-embed", input="x")
    assert short.value.status_code == 402 and short.value.code == "insufficient_credits"


async def test_models_lists_embedding_models_with_their_mode(client: httpx.AsyncClient) -> None:
    models = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    assert models["sim-small"]["mode"] == "chat" and "dimensions" not in models["sim-small"]["targets"][0]
    assert models["t-embed"]["mode"] == "embedding"
    target = models["t-embed"]["targets"][0]
    assert (target["max_inputs"], target["dimensions"], target["supports_dimensions"]) == (4, 256, True)
