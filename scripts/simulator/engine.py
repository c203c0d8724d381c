"""Protocol-independent request handling: parsing, planning a reply, pacing tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from .connection import abort_connection, wait_for_disconnect
from .faults import Decision, DirectiveError, SimState, extract_directives
from .text import (
    DEFAULT_EMBED_DIM,
    DEFAULT_REPLY_TOKENS,
    conversation,
    count_words,
    embed,
    pieces,
    reply_words,
)

SIM_HEADER = "x-sim"
_T = TypeVar("_T")


class BadRequest(Exception):
    """A client error to report in the protocol's own error format (HTTP 400)."""


def state_of(request: Request[Any, Any, Any]) -> SimState:
    """Return the :class:`SimState` stored on the application."""
    state: SimState = request.app.state["sim"]
    return state


async def read_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Decode the request body as a JSON object or raise :class:`BadRequest`."""
    try:
        data = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def require_model(data: dict[str, Any]) -> str:
    """Return ``data["model"]`` or raise :class:`BadRequest`."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: field required")
    return model


def decide(request: Request[Any, Any, Any], model: str, texts: Sequence[str]) -> Decision:
    """Combine header + magic-string directives with standing faults for this request."""
    try:
        directives = extract_directives(request.headers.get(SIM_HEADER), texts)
    except DirectiveError as exc:
        raise BadRequest(str(exc)) from None
    return state_of(request).decide(model, directives)


@dataclass
class ChatPlan:
    """Everything needed to answer one chat request, whatever the protocol."""

    model: str
    decision: Decision
    words: list[str]
    prompt_tokens: int
    capped: bool

    @property
    def pieces(self) -> list[str]:
        """Token pieces in streaming order."""
        return pieces(self.words)

    @property
    def text(self) -> str:
        """The full reply text."""
        return "".join(self.pieces)


def plan_chat(
    request: Request[Any, Any, Any],
    model: str,
    messages: Any,
    system: Any = None,
    max_tokens: Any = None,
) -> ChatPlan:
    """Decide faults/timing and derive the deterministic reply for a chat request."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty list")
    convo = conversation(messages, system)
    decision = decide(request, model, [text for _, text in convo])
    wanted = DEFAULT_REPLY_TOKENS if decision.tokens is None else max(0, decision.tokens)
    cap = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None
    capped = cap is not None and cap < wanted
    length = max(0, cap) if capped and cap is not None else wanted
    return ChatPlan(
        model=model,
        decision=decision,
        words=reply_words(model, convo, length),
        prompt_tokens=sum(count_words(text) for _, text in convo),
        capped=capped,
    )


async def paced(items: Sequence[_T], decision: Decision) -> AsyncIterator[_T]:
    """Yield ``items`` honouring time-to-first-token and tokens/second.

    Token ``i`` is released at ``start + ttft + i / tps`` (absolute schedule, so slow
    consumers don't accumulate drift).
    """
    start = time.monotonic()
    ttft = max(0.0, decision.ttft_ms) / 1000.0
    interval = 1.0 / decision.tps if decision.tps > 0 else 0.0
    for i, item in enumerate(items):
        delay = start + ttft + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield item


async def wait_full_reply(n_tokens: int, decision: Decision) -> None:
    """Sleep as long as streaming ``n_tokens`` would take (non-streaming responses)."""
    interval = 1.0 / decision.tps if decision.tps > 0 else 0.0
    total = max(0.0, decision.ttft_ms) / 1000.0 + max(0, n_tokens - 1) * interval
    if total > 0:
        await asyncio.sleep(total)


async def hang(request: Request[Any, Any, Any], decision: Decision) -> bool:
    """Hold the request; True if the client left, False if ``hang_s`` elapsed first."""
    return await wait_for_disconnect(request, decision.directives.hang_s)


def now() -> int:
    """Current Unix time in whole seconds (``created`` fields)."""
    return int(time.time())


ErrorRenderer = Callable[[str, Decision], Response[Any]]
# fault -> HTTP status; every protocol answers a fault with the same code, only the body differs.
FAULT_STATUS: dict[str, int] = {
    "429": 429,
    "500": 500,
    "503": 503,
    "529": 529,
    "400": 400,
    "401": 401,
    "context": 400,
}
STATUS_FAULTS = frozenset(FAULT_STATUS)
# A 200 body that is deliberately not valid JSON (non-streaming fault=malformed).
MALFORMED_JSON = b'{"id": "sim-malformed", "object": "truncated", "choices": [{"inde'
GONE = 499  # nginx's "client closed request"; the response is never actually delivered


def retry_after_headers(fault: str, decision: Decision) -> dict[str, str] | None:
    """``Retry-After`` headers for ``fault=429`` (None for any other fault)."""
    if fault != "429":
        return None
    secs = decision.directives.retry_after
    # Whole seconds are sent without a decimal point, as real providers do.
    return {"retry-after": str(int(secs)) if secs == int(secs) else str(secs)}


async def early_fault(
    request: Request[Any, Any, Any],
    decision: Decision,
    render_error: ErrorRenderer,
    streaming: bool,
) -> Response[Any] | None:
    """Apply faults that strike before any reply bytes; None means "go on answering".

    For streaming requests ``cut`` and ``malformed`` happen mid-stream, so they are left
    to the protocol's stream generator.
    """
    fault = decision.fault
    if fault is None:
        return None
    if fault in STATUS_FAULTS:
        return render_error(fault, decision)
    if fault == "hang":
        # Past hang_s the request is answered normally: a very slow provider.
        return Response(b"", status_code=GONE) if await hang(request, decision) else None
    if streaming:
        return None
    if fault == "cut":
        await abort_connection(request)
        return Response(b"", status_code=GONE)
    if fault == "malformed":
        return Response(MALFORMED_JSON, media_type="application/json", status_code=200)
    return None


def stream_limit(plan: ChatPlan) -> list[str]:
    """Pieces to send before a mid-stream fault (all pieces when there is none)."""
    if plan.decision.fault in ("cut", "malformed"):
        return plan.pieces[: plan.decision.directives.after]
    return plan.pieces


def record(request: Request[Any, Any, Any], api: str, model: str, decision: Decision) -> None:
    """Count the request in the stats under its outcome (``ok`` or the fault name)."""
    state_of(request).record(api, model, decision.fault or "ok")


async def stream_reply(
    request: Request[Any, Any, Any],
    plan: ChatPlan,
    frames: Sequence[bytes],
    malformed: bytes,
    tail: Callable[[], Iterable[bytes]],
) -> AsyncIterator[bytes]:
    """Pace ``frames``, then strike a mid-stream ``cut``/``malformed`` or send ``tail()``.

    ``frames`` should come from :func:`stream_limit`; ``malformed`` is the protocol's
    half-written frame. ``tail`` is called only after the last frame went out, so closing
    frames can report real durations.
    """
    async for frame in paced(frames, plan.decision):
        yield frame
    if plan.decision.fault == "cut":
        await abort_connection(request)
        return
    if plan.decision.fault == "malformed":
        yield malformed
        return
    for frame in tail():
        yield frame


@dataclass
class EmbedPlan:
    """Everything needed to answer one embeddings request, whatever the protocol."""

    model: str
    inputs: list[str]
    dims: int
    decision: Decision

    @property
    def vectors(self) -> list[list[float]]:
        """One deterministic unit vector per input, in input order."""
        return [embed(text, self.dims) for text in self.inputs]

    @property
    def prompt_tokens(self) -> int:
        """Words across all inputs."""
        return sum(count_words(text) for text in self.inputs)


async def plan_embed(
    request: Request[Any, Any, Any],
    api: str,
    model: str,
    inputs: list[str],
    dimensions: Any,
    render_error: ErrorRenderer,
) -> EmbedPlan | Response[Any]:
    """Validate, record and pace an embeddings request; a Response is a fault to return."""
    dims = dimensions or DEFAULT_EMBED_DIM
    if not isinstance(dims, int) or dims < 1:
        raise BadRequest("dimensions: must be a positive integer")
    decision = decide(request, model, inputs)
    record(request, api, model, decision)
    early = await early_fault(request, decision, render_error, streaming=False)
    if early is not None:
        return early
    # An embedding costs the time of one token: TTFT, so ttft_ms directives still apply.
    await wait_full_reply(1, decision)
    return EmbedPlan(model=model, inputs=inputs, dims=dims, decision=decision)
