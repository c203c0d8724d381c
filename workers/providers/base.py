"""The `Provider` seam: one protocol every adapter implements (chat completions and embeddings)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Protocol, TypeVar

import httpx
import httpx2
import msgspec

from jobs.errors import ContextTooLong, ProviderError, ProviderOverloaded, ProviderRejected
from jobs.kinds import Message, Usage

#: Called with each piece of generated text while a completion streams.
OnDelta = Callable[[str], Awaitable[None]]
T = TypeVar("T")


class TargetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A job's chat input as sent to one target (`model` is the provider's model name, limits are the target's)."""

    model: str
    messages: list[Message]
    max_tokens: int
    temperature: float | None = None
    timeout_seconds: float = 60.0


class ChatOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider produced for a chat completion."""

    content: str
    finish_reason: str
    usage: Usage
    #: Milliseconds from the request to the first generated text (streams only).
    ttft_ms: float | None = None


class EmbedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Texts to embed in one call to one target (`model` is the provider's model name)."""

    model: str
    texts: list[str]
    #: Shorter vectors; sent only to targets that support it (None: the model's native size).
    dimensions: int | None = None
    timeout_seconds: float = 60.0


class EmbedOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider produced for an embedding call: one vector per text, in input order."""

    vectors: list[list[float]]
    usage: Usage


class Provider(Protocol):
    """A backend that can run chat completions and, where it has them, embeddings."""

    name: str

    async def chat(self, request: TargetRequest, on_delta: OnDelta | None = None) -> ChatOutcome:
        """Run one completion; stream through `on_delta` when given.

        Raises:
            ProviderOverloaded: transient failure (retry, then fall back).
            ProviderRejected: the request itself was refused (fail fast).
        """
        ...

    async def embed(self, request: EmbedRequest) -> EmbedOutcome:
        """Embed `request.texts` in one call.

        Raises:
            ProviderOverloaded: transient failure (retry, then fall back).
            ProviderRejected: the request was refused, or the provider has no embeddings (fail fast).
        """
        ...


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate (~4 characters per token), never zero for text."""
    return max(1, (len(text) + 3) // 4) if text else 0


def classify_transport(exc: BaseException) -> ProviderError:
    """Errors below the SDKs (they leak through on streams): timeouts, broken or garbled streams.

    The SDKs ship their own httpx fork (`httpx2`) and the ollama client uses
    `httpx`, so both families are handled.
    """
    match exc:
        case httpx.TimeoutException() | httpx2.TimeoutException() | TimeoutError():
            return ProviderOverloaded(f"timed out: {type(exc).__name__}", reason="timeout")
        case json.JSONDecodeError() | UnicodeDecodeError() | msgspec.DecodeError():
            return ProviderOverloaded("malformed response from the provider", reason="malformed")
        case httpx.RemoteProtocolError() | httpx2.RemoteProtocolError():
            return ProviderOverloaded("connection closed mid-response", reason="stream_broken")
        case httpx.TransportError() | httpx2.TransportError() | ConnectionError():
            return ProviderOverloaded(f"connection failed: {type(exc).__name__}", reason="connection")
    return ProviderOverloaded(f"unexpected provider failure: {type(exc).__name__}", reason="unknown")


def map_sdk_error(exc: BaseException, sdk: ModuleType, context_error: Callable[[Any], bool]) -> ProviderError:
    """Translate an exception of the `openai` or `anthropic` SDK (same error classes) into our tree.

    `context_error` tells whether a 400 means the prompt is longer than the model's context window.
    """
    match exc:
        case sdk.APITimeoutError():
            return ProviderOverloaded("timed out", reason="timeout")
        case sdk.APIConnectionError() if exc.__cause__ is not None:
            return classify_transport(exc.__cause__)
        case sdk.APIConnectionError():
            return ProviderOverloaded("connection failed", reason="connection")
        case sdk.RateLimitError():
            retry_after = exc.response.headers.get("retry-after")
            return ProviderOverloaded("rate limited (429)", reason="rate_limited",
                                      retry_after=float(retry_after) if retry_after else None)
        case sdk.APIStatusError() if exc.status_code >= 500:
            return ProviderOverloaded(f"server error ({exc.status_code})", reason="server_error")
        case sdk.BadRequestError() if context_error(exc):
            return ContextTooLong(f"prompt exceeds the provider's context window: {exc.message}")
        case sdk.APIStatusError():
            return ProviderRejected(f"request rejected ({exc.status_code}): {exc.message}", status=exc.status_code)
        case sdk.APIError():
            return ProviderOverloaded(f"provider error: {exc.message}", reason="stream_broken")
    return classify_transport(exc)


class OwnSideFailure(Exception):
    """Our own code failed inside a provider call (publishing a delta to Redis, say): not the provider's fault."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


async def guarded(call: Awaitable[T], map_error: Callable[[Exception], ProviderError]) -> T:
    """Await one adapter call, translating whatever escapes the SDK into our error tree (once, here).

    A failure of our own side (`OwnSideFailure`) passes through as the original error: it must
    neither count against the provider's circuit nor move the job to a fallback target; the job
    is handed back and its delivery retried, as for any infrastructure error.
    """
    try:
        return await call
    except ProviderError:
        raise
    except OwnSideFailure as exc:
        raise exc.original from None
    except Exception as exc:
        raise map_error(exc) from exc


class StreamedText:
    """The text of a streaming completion: forwards each piece to `on_delta`, times the first one."""

    def __init__(self, on_delta: OnDelta) -> None:
        self.on_delta = on_delta
        self.started = time.perf_counter()
        self.ttft_ms: float | None = None
        self.parts: list[str] = []

    async def add(self, text: str) -> None:
        """One piece of generated text (empty pieces are ignored)."""
        if not text:
            return
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000
        self.parts.append(text)
        try:
            await self.on_delta(text)
        except Exception as exc:
            raise OwnSideFailure(exc) from exc

    @property
    def text(self) -> str:
        """Everything streamed so far."""
        return "".join(self.parts)
