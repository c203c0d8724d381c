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

from .engine import (
    FAULT_STATUS,
    BadRequest,
    ChatPlan,
    EmbedPlan,
    early_fault,
    plan_chat,
    plan_embed,
    read_json,
    record,
    require_model,
    retry_after_headers,
    state_of,
    stream_limit,
    stream_reply,
    wait_full_reply,
)
from .faults import Decision

# Ollama's error body is a bare message; the HTTP status is engine.FAULT_STATUS.
_MESSAGES = {
    "429": "rate limited (simulated)",
    "401": "unauthorized (simulated)",
    "context": "context length exceeded (simulated)",
    "400": "invalid request (simulated)",
}


def fault_error(fault: str, decision: Decision) -> Response[Any]:
    """Render a status-code fault as Ollama's ``{"error": "..."}``."""
    message = _MESSAGES.get(fault, f"simulated server error {fault}")
    headers = retry_after_headers(fault, decision)
    return Response({"error": message}, status_code=FAULT_STATUS[fault], headers=headers)


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
    malformed = b'{"model": "' + plan.model.encode() + b'", "message": {"role": \n'

    def closing() -> list[bytes]:
        # Built only once the last token is out, so the summary's durations are real.
        return [_line(_final(plan, started, ""))]

    async for line in stream_reply(request, plan, lines, malformed, closing):
        yield line


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
    plan = await plan_embed(
        request, "ollama.embed", model, inputs, data.get("dimensions"), fault_error
    )
    if not isinstance(plan, EmbedPlan):
        return plan
    return Response(
        {
            "model": model,
            "embeddings": plan.vectors,
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": plan.prompt_tokens,
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
