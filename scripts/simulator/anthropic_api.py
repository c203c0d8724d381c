"""Anthropic wire protocol: ``POST /v1/messages`` (JSON or SSE with ``event:`` lines)."""

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
    early_fault,
    plan_chat,
    read_json,
    record,
    require_model,
    retry_after_headers,
    stream_limit,
    stream_reply,
    wait_full_reply,
)
from .faults import Decision

# fault -> (error.type, message); the HTTP status is engine.FAULT_STATUS.
_ERRORS: dict[str, tuple[str, str]] = {
    "429": ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    "500": ("api_error", "Internal server error (simulated)."),
    "503": ("api_error", "Service unavailable (simulated)."),
    "529": ("overloaded_error", "Overloaded"),
    "400": ("invalid_request_error", "Invalid request (simulated)."),
    "401": ("authentication_error", "invalid x-api-key (simulated)"),
    "context": ("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"),
}


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    """Build an Anthropic-style ``{"type": "error", "error": {...}}`` response."""
    body = {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": "req_sim_" + secrets.token_hex(8),
    }
    return Response(body, status_code=status, headers=headers)


def fault_error(fault: str, decision: Decision) -> Response[Any]:
    """Render a status-code fault in Anthropic's error format."""
    type_, message = _ERRORS[fault]
    return error_response(FAULT_STATUS[fault], type_, message, retry_after_headers(fault, decision))


def bad_request(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Render :class:`BadRequest` as an Anthropic ``invalid_request_error``."""
    return error_response(400, "invalid_request_error", str(exc))


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(payload) + b"\n\n"


def _message(
    plan: ChatPlan, mid: str, content: list[Any], output_tokens: int, stop_reason: str | None
) -> dict[str, Any]:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": plan.prompt_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _stop_reason(plan: ChatPlan) -> str:
    return "max_tokens" if plan.capped else "end_turn"


async def _stream(
    request: Request[Any, Any, Any], plan: ChatPlan, mid: str
) -> AsyncIterator[bytes]:
    """Yield the real Messages streaming event sequence."""
    # Like the real API the preamble goes out at once; text deltas start at TTFT.
    yield _event(
        "message_start", {"type": "message_start", "message": _message(plan, mid, [], 1, None)}
    )
    yield _event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield _event("ping", {"type": "ping"})
    deltas = [
        _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
        for piece in stream_limit(plan)
    ]
    malformed = b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": \n\n'
    async for frame in stream_reply(request, plan, deltas, malformed, lambda: _closing(plan)):
        yield frame


def _closing(plan: ChatPlan) -> list[bytes]:
    """The events that end an unbroken stream: block stop, stop reason + usage, stop."""
    return [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None},
                "usage": {"output_tokens": len(plan.words)},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]


@post("/v1/messages", status_code=200)
async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
    """Anthropic Messages API, streaming or not."""
    data = await read_json(request)
    model = require_model(data)
    max_tokens = data.get("max_tokens")
    # The real API rejects a missing max_tokens; mirroring that catches client bugs early.
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: Field required (a positive integer)")
    plan = plan_chat(request, model, data.get("messages"), data.get("system"), max_tokens)
    record(request, "anthropic.messages", model, plan.decision)
    streaming = bool(data.get("stream"))
    early = await early_fault(request, plan.decision, fault_error, streaming)
    if early is not None:
        return early
    mid = "msg_sim_" + secrets.token_hex(12)
    if streaming:
        return Stream(
            _stream(request, plan, mid),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    await wait_full_reply(len(plan.words), plan.decision)
    content = [{"type": "text", "text": plan.text}]
    return Response(_message(plan, mid, content, len(plan.words), _stop_reason(plan)))


def models_payload(models: list[str]) -> dict[str, Any]:
    """Anthropic ``GET /v1/models`` body (chosen when ``anthropic-version`` is sent)."""
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2024-01-01T00:00:00Z"}
        for m in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    }


router = Router(path="/", route_handlers=[messages], exception_handlers={BadRequest: bad_request})
