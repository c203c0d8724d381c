"""Tests for the provider simulator (scripts/simulator), driven through the real SDKs."""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai
import pytest

from scripts.simulator import (
    DEFAULT_EMBED_DIM,
    DEFAULT_REPLY_TOKENS,
    DirectiveError,
    conversation,
    count_prompt_tokens,
    embed,
    parse_directives,
    reply_text,
    reply_words,
    serve_in_thread,
)

ROOT = Path(__file__).resolve().parents[1]
# The Anthropic SDK does not wrap a broken SSE body; it surfaces the transport error.
BROKEN_STREAM = (
    anthropic.APIConnectionError,
    httpx2.RemoteProtocolError,
    httpx.RemoteProtocolError,
)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_in_thread() as base:
        yield base


@pytest.fixture(autouse=True)
def _reset(url: str) -> None:
    httpx.post(url + "/_sim/reset").raise_for_status()


@pytest.fixture
def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sim", max_retries=0, timeout=10)


@pytest.fixture
def anth(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sim", max_retries=0, timeout=10)


@pytest.fixture
def oll(url: str) -> ollama.Client:
    return ollama.Client(host=url, timeout=10)


def user(content: Any) -> Any:
    """A one-message conversation (typed Any so it fits every SDK's message param type)."""
    return [{"role": "user", "content": content}]


def expected(model: str, messages: Any, n: int, system: Any = None) -> str:
    """The reply the simulator must produce, computed from its public helpers."""
    return reply_text(reply_words(model, conversation(messages, system), n))


def openai_stream(client: openai.OpenAI, out: list[str], **kwargs: Any) -> list[Any]:
    """Collect chunks, appending content deltas to ``out`` as they arrive."""
    chunks = []
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            out.append(chunk.choices[0].delta.content)
    return chunks


# --- pure helpers -------------------------------------------------------------------------


def test_directive_parsing() -> None:
    d = parse_directives(" fault=429 ; retry_after=2;times=3;model=a:b ")
    assert (d.fault, d.retry_after, d.times, d.model, d.after) == ("429", 2.0, 3, "a:b", 3)
    assert d.raw == "fault=429;retry_after=2;times=3;model=a:b"
    for bad in ("fault=418", "bogus=1", "times=x", "fault", "ttft_ms=inf", "tokens=-1"):
        with pytest.raises(DirectiveError):
            parse_directives(bad)


def test_token_counting_and_determinism() -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a b  c"}, {"type": "image"}]}]
    assert count_prompt_tokens(msgs, system="one two") == 5
    assert reply_words("m", conversation(msgs), 16)[:5] == reply_words("m", conversation(msgs), 5)
    assert reply_words("m", conversation(msgs), 8) != reply_words("n", conversation(msgs), 8)


# --- OpenAI -------------------------------------------------------------------------------


def test_openai_nonstream_deterministic_with_usage(oai: openai.OpenAI) -> None:
    msgs = [{"role": "system", "content": "be brief"}, *user("hello simulator world")]
    first = oai.chat.completions.create(model="sim-a", messages=msgs)
    second = oai.chat.completions.create(model="sim-a", messages=msgs)
    other = oai.chat.completions.create(model="sim-b", messages=msgs)
    text = first.choices[0].message.content
    assert text == second.choices[0].message.content == expected("sim-a", msgs, 16)
    assert text != other.choices[0].message.content
    assert text is not None and len(text.split()) == DEFAULT_REPLY_TOKENS and text.islower()
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.prompt_tokens == count_prompt_tokens(msgs) == 5
    assert (first.usage.completion_tokens, first.usage.total_tokens) == (16, 21)


def test_openai_stream_matches_nonstream(oai: openai.OpenAI) -> None:
    msgs = user([{"type": "text", "text": "stream me"}])  # content-part form
    full = oai.chat.completions.create(model="sim-a", messages=msgs)
    pieces: list[str] = []
    chunks = openai_stream(
        oai, pieces, model="sim-a", messages=msgs, stream_options={"include_usage": True}
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(pieces) == full.choices[0].message.content
    assert len(pieces) == 16 and pieces[1].startswith(" ")
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2 and chunks[-1].usage.completion_tokens == 16
    # Without include_usage no chunk carries usage.
    plain = openai_stream(oai, [], model="sim-a", messages=msgs)
    assert all(c.usage is None and c.choices for c in plain)


def test_openai_max_tokens_caps(oai: openai.OpenAI) -> None:
    msgs = user("cap me")
    full = expected("sim-a", msgs, 16)
    r = oai.chat.completions.create(model="sim-a", messages=msgs, max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 5
    assert r.choices[0].message.content == expected("sim-a", msgs, 5) and full.startswith(
        r.choices[0].message.content
    )
    pieces: list[str] = []
    chunks = openai_stream(oai, pieces, model="sim-a", messages=msgs, max_completion_tokens=3)
    assert len(pieces) == 3 and chunks[-1].choices[0].finish_reason == "length"
    big = oai.chat.completions.create(model="sim-a", messages=msgs, max_tokens=100)
    assert big.choices[0].finish_reason == "stop" and big.choices[0].message.content == full
    longer = oai.chat.completions.create(model="sim-a", messages=user("cap me [[sim: tokens=40]]"))
    assert longer.usage and longer.usage.completion_tokens == 40


def test_openai_embeddings(oai: openai.OpenAI) -> None:
    r = oai.embeddings.create(model="sim-embed", input=["alpha beta", "gamma"])
    assert [d.index for d in r.data] == [0, 1] and r.usage.prompt_tokens == 3
    vec = r.data[0].embedding
    assert len(vec) == DEFAULT_EMBED_DIM and math.isclose(
        math.fsum(v * v for v in vec), 1.0, rel_tol=1e-5
    )
    assert vec != r.data[1].embedding
    again = oai.embeddings.create(model="sim-embed", input="alpha beta", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(vec, abs=1e-6) == embed("alpha beta")
    small = oai.embeddings.create(model="sim-embed", input="alpha beta", dimensions=64)
    assert len(small.data[0].embedding) == 64
    raw = httpx.post(
        str(oai.base_url) + "embeddings",
        json={"model": "e", "input": "alpha beta", "encoding_format": "base64"},
    ).json()
    decoded = struct.unpack(f"<{DEFAULT_EMBED_DIM}f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(vec, abs=1e-6)


def test_openai_models(oai: openai.OpenAI) -> None:
    assert "sim-small" in {m.id for m in oai.models.list()}


async def test_async_openai_stream(url: str) -> None:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sim", max_retries=0)
    stream = await client.chat.completions.create(
        model="sim-a", messages=user("async"), stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == expected("sim-a", user("async"), 16)
    await client.close()


# --- Anthropic ----------------------------------------------------------------------------


def test_anthropic_nonstream_and_stream(anth: anthropic.Anthropic) -> None:
    msgs = user("hello claude friend")
    system: Any = [{"type": "text", "text": "you are terse"}]
    r = anth.messages.create(model="sim-c", max_tokens=50, system=system, messages=msgs)
    assert r.type == "message" and r.stop_reason == "end_turn"
    text = r.content[0].text if r.content[0].type == "text" else None
    assert text == expected("sim-c", msgs, 16, system)
    assert r.usage.input_tokens == count_prompt_tokens(msgs, system) == 6
    assert r.usage.output_tokens == 16
    again = anth.messages.create(model="sim-c", max_tokens=50, system=system, messages=msgs)
    assert again.content == r.content
    with anth.messages.stream(model="sim-c", max_tokens=50, system=system, messages=msgs) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == text
    assert final.usage.output_tokens == 16 and final.usage.input_tokens == 6
    capped = anth.messages.create(model="sim-c", max_tokens=4, system="sys", messages=msgs)
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 4
    assert capped.usage.input_tokens == 4


def test_anthropic_raw_event_sequence(url: str) -> None:
    body = {"model": "sim-c", "max_tokens": 3, "stream": True, "messages": user("raw")}
    with httpx.stream("POST", url + "/v1/messages", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    events = [ln.removeprefix("event: ") for ln in lines if ln.startswith("event: ")]
    assert events == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    data = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: ")]
    assert data[0]["message"]["usage"]["input_tokens"] == 1
    assert data[-2]["delta"]["stop_reason"] == "max_tokens"
    assert data[-2]["usage"]["output_tokens"] == 3


def test_anthropic_requires_max_tokens(url: str) -> None:
    r = httpx.post(url + "/v1/messages", json={"model": "m", "messages": user("x")})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# --- Ollama -------------------------------------------------------------------------------


def test_ollama_chat_and_embed(oll: ollama.Client) -> None:
    msgs = user("hello llama")
    r = oll.chat(model="llama3:8b", messages=msgs, stream=False)
    assert (
        r.done and r.done_reason == "stop" and r.message.content == expected("llama3:8b", msgs, 16)
    )
    assert (r.prompt_eval_count, r.eval_count) == (2, 16) and r.total_duration is not None
    parts = list(oll.chat(model="llama3:8b", messages=msgs, stream=True))
    assert "".join(p.message.content or "" for p in parts) == r.message.content
    assert parts[-1].done and not parts[0].done and parts[-1].eval_count == 16
    capped = oll.chat(model="llama3:8b", messages=msgs, options={"num_predict": 2})
    assert capped.done_reason == "length" and capped.eval_count == 2
    e = oll.embed(model="nomic", input=["one two", "three"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == DEFAULT_EMBED_DIM
    assert e.embeddings[0] == pytest.approx(embed("one two"))
    assert len(oll.embed(model="nomic", input="x", dimensions=32).embeddings[0]) == 32
    assert "llama3:8b" in {m.model for m in oll.list().models}


# --- faults -------------------------------------------------------------------------------


def test_429_retry_after(oai: openai.OpenAI, anth: anthropic.Anthropic, oll: ollama.Client) -> None:
    with pytest.raises(openai.RateLimitError) as oe:
        oai.chat.completions.create(model="m", messages=user("hi [[sim: fault=429;retry_after=2]]"))
    assert oe.value.response.headers["retry-after"] == "2"
    assert oe.value.response.headers["retry-after-ms"] == "2000"
    assert oe.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as ae:
        anth.messages.create(model="m", max_tokens=9, messages=user("hi [[sim: fault=429]]"))
    assert ae.value.response.headers["retry-after"] == "1"
    body: Any = ae.value.body
    assert body["error"]["type"] == "rate_limit_error"
    with pytest.raises(ollama.ResponseError) as le:
        oll.chat(model="m", messages=user("[[sim: fault=429]]"))
    assert le.value.status_code == 429


def test_status_faults(oai: openai.OpenAI, anth: anthropic.Anthropic, oll: ollama.Client) -> None:
    with pytest.raises(openai.InternalServerError) as oe:
        oai.chat.completions.create(model="m", messages=user("[[sim: fault=500]]"))
    assert oe.value.status_code == 500
    with pytest.raises(anthropic.InternalServerError):
        anth.messages.create(model="m", max_tokens=9, messages=user("[[sim:fault=500]]"))
    with pytest.raises(anthropic.OverloadedError) as ae:
        anth.messages.create(model="m", max_tokens=9, messages=user("[[sim: fault=529]]"))
    assert ae.value.status_code == 529
    with pytest.raises(openai.InternalServerError) as oe:
        oai.chat.completions.create(model="m", messages=user("[[sim: fault=503]]"))
    assert oe.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as ce:
        oai.chat.completions.create(model="m", messages=user("[[sim: fault=context]]"))
    assert ce.value.code == "context_length_exceeded"
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(model="m", messages=user("[[sim: fault=401]]"))
    with pytest.raises(anthropic.BadRequestError):
        anth.messages.create(model="m", max_tokens=9, messages=user("[[sim: fault=400]]"))
    with pytest.raises(ollama.ResponseError) as le:
        oll.chat(model="m", messages=user("[[sim: fault=500]]"), stream=True).__next__()
    assert le.value.status_code == 500
    with pytest.raises(openai.BadRequestError, match="unknown simulator fault"):
        oai.chat.completions.create(model="m", messages=user("[[sim: fault=teapot]]"))


def test_header_directives(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(
            model="m", messages=user("plain"), extra_headers={"x-sim": "fault=500"}
        )
    with pytest.raises(openai.RateLimitError):
        oai.embeddings.create(model="e", input="x", extra_headers={"x-sim": "fault=429"})


def test_times_then_success_and_model_scoping(oai: openai.OpenAI, url: str) -> None:
    msgs = user("flaky [[sim: fault=500;times=2]]")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model="m1", messages=msgs)
    assert oai.chat.completions.create(model="m1", messages=msgs).choices[0].message.content
    # The counter is per model: a different target gets its own two failures.
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m2", messages=msgs)
    scoped = user("[[sim: fault=500;model=target-a]] go")
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="target-a", messages=scoped)
    ok = oai.chat.completions.create(model="target-b", messages=scoped)
    assert ok.choices[0].message.content == expected("target-b", scoped, 16)
    stats = httpx.get(url + "/_sim/stats").json()
    assert stats["apis"]["openai.chat"]["m1"] == {"total": 3, "outcomes": {"500": 2, "ok": 1}}
    assert stats["apis"]["openai.chat"]["target-b"]["outcomes"] == {"ok": 1}


def test_hang(oai: openai.OpenAI, anth: anthropic.Anthropic, url: str) -> None:
    quick = oai.with_options(timeout=0.4)
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        quick.chat.completions.create(model="m", messages=user("[[sim: fault=hang]]"))
    assert 0.35 < time.monotonic() - start < 3
    with pytest.raises(anthropic.APITimeoutError):
        anth.with_options(timeout=0.3).messages.create(
            model="m", max_tokens=5, messages=user("[[sim: fault=hang]]"), stream=True
        )
    with pytest.raises(httpx.ReadTimeout):
        ollama.Client(host=url, timeout=0.3).chat(model="m", messages=user("[[sim: fault=hang]]"))
    # With hang_s the request is answered normally once the hang is over.
    start = time.monotonic()
    r = oai.chat.completions.create(model="m", messages=user("[[sim: fault=hang;hang_s=0.3]]"))
    assert time.monotonic() - start >= 0.29 and r.choices[0].finish_reason == "stop"


def test_cut_mid_stream(oai: openai.OpenAI, anth: anthropic.Anthropic, oll: ollama.Client) -> None:
    pieces: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        openai_stream(oai, pieces, model="m", messages=user("[[sim: fault=cut]]"))
    assert len(pieces) == 3
    texts: list[str] = []
    cut = user("[[sim: fault=cut;after=5]]")
    with (
        pytest.raises(BROKEN_STREAM),
        anth.messages.stream(model="m", max_tokens=50, messages=cut) as s,
    ):
        texts.extend(s.text_stream)
    assert len(texts) == 5
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        for part in oll.chat(model="m", messages=user("[[sim: fault=cut;after=2]]"), stream=True):
            lines.append(part.message.content or "")
    assert len(lines) == 2
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="m", messages=user("[[sim: fault=cut]]"))


def test_malformed_chunk(oai: openai.OpenAI, anth: anthropic.Anthropic, oll: ollama.Client) -> None:
    pieces: list[str] = []
    with pytest.raises(json.JSONDecodeError):
        openai_stream(oai, pieces, model="m", messages=user("[[sim: fault=malformed;after=4]]"))
    assert len(pieces) == 4
    texts: list[str] = []
    bad = user("[[sim: fault=malformed;after=2]]")
    with (
        pytest.raises(json.JSONDecodeError),
        anth.messages.stream(model="m", max_tokens=50, messages=bad) as s,
    ):
        texts.extend(s.text_stream)
    assert len(texts) == 2
    with pytest.raises(json.JSONDecodeError):
        list(oll.chat(model="m", messages=user("[[sim: fault=malformed]]"), stream=True))
    with pytest.raises(json.JSONDecodeError):
        oai.chat.completions.create(model="m", messages=user("[[sim: fault=malformed]]"))


def test_timing_directives(oai: openai.OpenAI) -> None:
    start = time.monotonic()
    stamps: list[float] = []
    for chunk in oai.chat.completions.create(
        model="m", messages=user("slow [[sim: ttft_ms=200;tps=20;tokens=6]]"), stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.monotonic() - start)
    assert len(stamps) == 6
    assert 0.19 <= stamps[0] < 1.5
    # The server cannot send the last token before ttft + 5 gaps at 20 tokens/s; a loaded
    # client may receive tokens late and bunched, so only lower bounds from the start hold.
    assert stamps[-1] >= (0.2 + 5 / 20) * 0.9
    start = time.monotonic()
    oai.chat.completions.create(model="m", messages=user("[[sim: ttft_ms=150;tps=50;tokens=6]]"))
    assert 0.14 + 5 / 50 * 0.9 <= time.monotonic() - start < 1.5


def test_server_default_timing() -> None:
    with serve_in_thread(ttft_ms=150) as base:
        assert httpx.get(base + "/healthz").json()["ttft_ms"] == 150
        client = openai.OpenAI(base_url=base + "/v1", api_key="sim", max_retries=0)
        start = time.monotonic()
        client.chat.completions.create(model="m", messages=user("default timing"))
        assert 0.14 <= time.monotonic() - start < 1.5
        start = time.monotonic()
        client.chat.completions.create(model="m", messages=user("[[sim: ttft_ms=0]] fast"))
        assert time.monotonic() - start < 0.14


def test_control_api_standing_fault_and_stats(oai: openai.OpenAI, url: str) -> None:
    r = httpx.post(url + "/_sim/faults", json={"model": "bad", "directives": "fault=503;times=3"})
    assert r.status_code == 200 and r.json()["directives"] == "fault=503;times=3"
    assert httpx.get(url + "/_sim/faults").json() == {"faults": {"bad": "fault=503;times=3"}}
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model="bad", messages=user("x"))
    assert oai.chat.completions.create(model="bad", messages=user("x")).choices
    assert oai.chat.completions.create(model="good", messages=user("x")).choices
    httpx.post(url + "/_sim/faults", json={"model": "dead", "directives": "fault=500"})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oai.chat.completions.create(model="dead", messages=user("x"))
    stats = httpx.get(url + "/_sim/stats").json()
    assert stats["total"] == 7 and stats["outcomes"] == {"503": 3, "ok": 2, "500": 2}
    assert stats["apis"]["openai.chat"]["bad"] == {"total": 4, "outcomes": {"503": 3, "ok": 1}}
    assert httpx.delete(url + "/_sim/faults").status_code == 200
    assert oai.chat.completions.create(model="dead", messages=user("x")).choices
    bad = httpx.post(url + "/_sim/faults", json={"model": "m", "directives": "fault=nope"})
    assert bad.status_code == 400
    assert httpx.post(url + "/_sim/reset").status_code == 200
    assert httpx.get(url + "/_sim/stats").json() == {"total": 0, "outcomes": {}, "apis": {}}


def test_cli_prints_url() -> None:
    env = {**os.environ, "SIM_TTFT_MS": "7"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.simulator", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.split()[-1]
        assert base.startswith("http://127.0.0.1:")
        assert httpx.get(base + "/healthz").json()["ttft_ms"] == 7
    finally:
        proc.terminate()
        proc.wait(timeout=10)
