"""OpenAI wire protocol: ``/v1/chat/completions`` (incl. SSE), ``/v1/embeddings``, models."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.response import Stream

from .engine import (
    FAULT_STATUS,
    BadRequest,
    ChatPlan,
    EmbedPlan,
    early_fault,
    now,
    plan_chat,
    plan_embed,
    read_json,
    record,
    require_model,
    retry_after_headers,
    stream_limit,
    stream_reply,
    wait_full_reply,
)
from .faults import Decision
from .text import embed_base64

# fault -> (error.type, error.code, message); the HTTP status is engine.FAULT_STATUS.
_ERRORS: dict[str, tuple[str, str | None, str]] = {
    "429": ("requests", "rate_limit_exceeded", "Rate limit reached (simulated)."),
    "500": ("server_error", None, "The server had an error processing your request."),
    "503": ("server_error", "service_unavailable", "The engine is currently overloaded."),
    "529": ("server_error", "overloaded", "The server is overloaded (simulated)."),
    "400": ("invalid_request_error", None, "Invalid request (simulated)."),
    "401": ("invalid_request_error", "invalid_api_key", "Incorrect API key (simulated)."),
    "context": (
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in more tokens. Please reduce the length of the messages. (simulated)",
    ),
}


def error_response(
    status: int,
    type_: str,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """Build an OpenAI-style ``{"error": {...}}`` response."""
    body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
    return Response(body, status_code=status, headers=headers)


def fault_error(fault: str, decision: Decision) -> Response[Any]:
    """Render a status-code fault in OpenAI's error format."""
    type_, code, message = _ERRORS[fault]
    headers = retry_after_headers(fault, decision)
    if headers is not None:
        # OpenAI also sends the delay in milliseconds, which its SDK reads first.
        headers["retry-after-ms"] = str(int(decision.directives.retry_after * 1000))
    param = "messages" if fault == "context" else None
    return error_response(FAULT_STATUS[fault], type_, message, code, param, headers)


def bad_request(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Render :class:`BadRequest` as an OpenAI ``invalid_request_error``."""
    return error_response(400, "invalid_request_error", str(exc))


def _sse(payload: Any) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


def _usage(plan: ChatPlan) -> dict[str, int]:
    n = len(plan.words)
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": n,
        "total_tokens": plan.prompt_tokens + n,
    }


async def _stream(
    request: Request[Any, Any, Any], plan: ChatPlan, cid: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """Yield SSE frames shaped exactly like OpenAI ``chat.completion.chunk`` events."""
    base: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": now(),
        "model": plan.model,
        "system_fingerprint": "fp_sim",
    }
    if include_usage:
        base["usage"] = None  # OpenAI sends usage: null on every chunk but the last

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [choice]})

    role = chunk({"role": "assistant", "content": "", "refusal": None})
    frames = [chunk({"content": piece}) for piece in stream_limit(plan)]
    # The role chunk travels with the first token, so it too arrives at TTFT.
    frames = [role + frames[0], *frames[1:]] if frames else [role]
    malformed = b'data: {"id": "' + cid.encode() + b'", "choices": [{"delta": {"content": \n\n'

    def closing() -> list[bytes]:
        usage = [_sse({**base, "choices": [], "usage": _usage(plan)})] if include_usage else []
        return [chunk({}, "length" if plan.capped else "stop"), *usage, b"data: [DONE]\n\n"]

    async for frame in stream_reply(request, plan, frames, malformed, closing):
        yield frame


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Chat Completions, streaming (SSE) or not."""
    data = await read_json(request)
    model = require_model(data)
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    plan = plan_chat(request, model, data.get("messages"), None, max_tokens)
    record(request, "openai.chat", model, plan.decision)
    streaming = bool(data.get("stream"))
    early = await early_fault(request, plan.decision, fault_error, streaming)
    if early is not None:
        return early
    cid = "chatcmpl-" + secrets.token_hex(12)
    if streaming:
        opts = data.get("stream_options") or {}
        include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
        return Stream(
            _stream(request, plan, cid, include_usage),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    await wait_full_reply(len(plan.words), plan.decision)
    message = {"role": "assistant", "content": plan.text, "refusal": None}
    return Response(
        {
            "id": cid,
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "system_fingerprint": "fp_sim",
            "usage": _usage(plan),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "length" if plan.capped else "stop",
                }
            ],
        }
    )


def _inputs(raw: Any) -> list[str]:
    """Accept str, list[str], list[int] (one tokenised input) or list[list[int]]."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, int) for x in raw):
            return [" ".join(map(str, raw))]
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, list) for x in raw):
            return [" ".join(map(str, x)) for x in raw]
    raise BadRequest("input: must be a non-empty string or array")


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Embeddings: deterministic unit vectors, float or base64 encoded."""
    data = await read_json(request)
    model = require_model(data)
    inputs = _inputs(data.get("input"))
    plan = await plan_embed(
        request, "openai.embeddings", model, inputs, data.get("dimensions"), fault_error
    )
    if not isinstance(plan, EmbedPlan):
        return plan
    b64 = data.get("encoding_format") == "base64"
    items = [
        {"object": "embedding", "index": i, "embedding": embed_base64(v) if b64 else v}
        for i, v in enumerate(plan.vectors)
    ]
    tokens = plan.prompt_tokens
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return Response({"object": "list", "data": items, "model": model, "usage": usage})


def models_payload(models: list[str]) -> dict[str, Any]:
    """OpenAI ``GET /v1/models`` body."""
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "switchyard-sim"} for m in models
        ],
    }


router = Router(
    path="/",
    route_handlers=[chat_completions, embeddings],
    exception_handlers={BadRequest: bad_request},
)
