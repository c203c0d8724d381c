"""Ollama wire protocol: ``/api/chat`` (NDJSON stream by default), ``/api/embed``, tags."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.response import Stream

from .connection import abort_connection
from .engine import (
    BadRequest,
    ChatPlan,
    decide,
    early_fault,
    paced,
    plan_chat,
    read_json,
    record,
    require_model,
    state_of,
    stream_limit,
    wait_full_reply,
)
from .faults import Decision
from .text import DEFAULT_EMBED_DIM, count_words, embed

_STATUS = {"429": 429, "500": 500, "503": 503, "529": 529, "400": 400, "401": 401, "context": 400}
_MESSAGES = {
    "429": "rate limited (simulated)",
    "401": "unauthorized (simulated)",
    "context": "context length exceeded (simulated)",
    "400": "invalid request (simulated)",
}


def fault_error(fault: str, decision: Decision) -> Response[Any]:
    """Render a status-code fault as Ollama's ``{"error": "..."}``."""
    headers = None
    if fault == "429":
        secs = decision.directives.retry_after
        headers = {"retry-after": str(int(secs)) if secs == int(secs) else str(secs)}
    message = _MESSAGES.get(fault, f"simulated server error {fault}")
    return Response({"error": message}, status_code=_STATUS[fault], headers=headers)


def bad_request(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Render :class:`BadRequest` the way Ollama does."""
    return Response({"error": str(exc)}, status_code=400)


def _created_at() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _line(payload: dict[str, Any]) -> bytes:
    return msgspec.json.encode(payload) + b"\n"


def _final(plan: ChatPlan, started: float, content: str) -> dict[str, Any]:
    """The ``done: true`` object with counts and (real, nanosecond) durations."""
    total = int((time.monotonic() - started) * 1e9)
    return {
        "model": plan.model,
        "created_at": _created_at(),
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "length" if plan.capped else "stop",
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": plan.prompt_tokens,
        "prompt_eval_duration": 0,
        "eval_count": len(plan.words),
        "eval_duration": total,
    }


async def _stream(
    request: Request[Any, Any, Any], plan: ChatPlan, started: float
) -> AsyncIterator[bytes]:
    """Yield NDJSON lines: one per token, then the ``done`` summary."""
    lines = [
        _line(
            {
                "model": plan.model,
                "created_at": _created_at(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
        )
        for piece in stream_limit(plan)
    ]
    async for line in paced(lines, plan.decision):
        yield line
    if plan.decision.fault == "cut":
        await abort_connection(request)
        return
    if plan.decision.fault == "malformed":
        yield b'{"model": "' + plan.model.encode() + b'", "message": {"role": \n'
        return
    yield _line(_final(plan, started, ""))


@post("/api/chat", status_code=200)
async def chat(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ollama chat; streams NDJSON unless ``"stream": false``."""
    started = time.monotonic()
    data = await read_json(request)
    model = require_model(data)
    options = data.get("options")
    options = options if isinstance(options, dict) else {}
    plan = plan_chat(request, model, data.get("messages"), None, options.get("num_predict"))
    record(request, "ollama.chat", model, plan.decision)
    streaming = data.get("stream", True) is not False
    early = await early_fault(request, plan.decision, fault_error, streaming)
    if early is not None:
        return early
    if streaming:
        return Stream(_stream(request, plan, started), media_type="application/x-ndjson")
    await wait_full_reply(len(plan.words), plan.decision)
    return Response(_final(plan, started, plan.text))


@post("/api/embed", status_code=200)
async def embed_route(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ollama ``/api/embed``: ``input`` str or list -> ``embeddings``."""
    started = time.monotonic()
    data = await read_json(request)
    model = require_model(data)
    raw = data.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise BadRequest("input: must be a string or a non-empty list of strings")
    dims = data.get("dimensions") or DEFAULT_EMBED_DIM
    if not isinstance(dims, int) or dims < 1:
        raise BadRequest("dimensions: must be a positive integer")
    decision = decide(request, model, inputs)
    record(request, "ollama.embed", model, decision)
    early = await early_fault(request, decision, fault_error, streaming=False)
    if early is not None:
        return early
    await wait_full_reply(1, decision)
    return Response(
        {
            "model": model,
            "embeddings": [embed(t, dims) for t in inputs],
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": sum(count_words(t) for t in inputs),
        }
    )


@get("/api/tags")
async def tags(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Ollama ``/api/tags``: the simulator's default models plus any seen so far."""
    models = []
    for name in state_of(request).known_models():
        tagged = name if ":" in name else name + ":latest"
        models.append(
            {
                "name": tagged,
                "model": tagged,
                "modified_at": "2024-01-01T00:00:00Z",
                "size": 1_000_000,
                "digest": hashlib.sha256(tagged.encode()).hexdigest(),
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "sim",
                    "families": ["sim"],
                    "parameter_size": "1B",
                    "quantization_level": "Q4_0",
                },
            }
        )
    return {"models": models}


router = Router(
    path="/", route_handlers=[chat, embed_route, tags], exception_handlers={BadRequest: bad_request}
)
