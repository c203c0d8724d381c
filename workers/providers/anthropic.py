"""Anthropic's Messages API through the official `anthropic` SDK."""

from __future__ import annotations

from typing import Any

import anthropic

from jobs.errors import ProviderError, ProviderOverloaded, ProviderRejected
from jobs.kinds import Usage
from workers.providers.base import (
    ChatOutcome,
    EmbedOutcome,
    EmbedRequest,
    OnDelta,
    StreamedText,
    TargetRequest,
    guarded,
    map_sdk_error,
)

#: Anthropic stop reasons in OpenAI's vocabulary, which is what our results use.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def map_error(exc: Exception) -> ProviderError:
    """Translate an SDK or transport exception into our error tree."""
    return map_sdk_error(exc, anthropic, lambda e: "prompt is too long" in str(e.message).lower())


class AnthropicProvider:
    """Chat completions through the official `anthropic` SDK (system prompt lifted out of the messages)."""

    def __init__(self, name: str, *, base_url: str | None, api_key: str) -> None:
        self.name = name
        self.client = anthropic.AsyncAnthropic(base_url=base_url or None, api_key=api_key, max_retries=0)

    async def chat(self, request: TargetRequest, on_delta: OnDelta | None = None) -> ChatOutcome:
        """Run one completion, streaming when `on_delta` is given."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": "assistant" if m.role == "assistant" else "user", "content": m.content}
                for m in request.messages if m.role != "system"
            ],
            "timeout": request.timeout_seconds,
        }
        if system:
            kwargs["system"] = system
        if request.temperature is not None:
            kwargs["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
        call = self._complete(kwargs) if on_delta is None else self._stream(kwargs, StreamedText(on_delta))
        return await guarded(call, map_error)

    async def embed(self, request: EmbedRequest) -> EmbedOutcome:
        """Anthropic has no embeddings API: refuse, so an embedding route never silently lands here."""
        raise ProviderRejected(f"{self.name} is an anthropic provider, which has no embeddings; "
                               "route embedding models to an openai or ollama provider")

    async def _complete(self, kwargs: dict[str, Any]) -> ChatOutcome:
        message = await self.client.messages.create(**kwargs)
        content = "".join(block.text for block in message.content if block.type == "text")
        return ChatOutcome(
            content=content,
            finish_reason=_FINISH.get(message.stop_reason or "", "stop"),
            usage=_usage(message.usage.input_tokens, message.usage.output_tokens),
        )

    async def _stream(self, kwargs: dict[str, Any], text: StreamedText) -> ChatOutcome:
        input_tokens = output_tokens = 0
        stop_reason = ""
        stream = await self.client.messages.create(**kwargs, stream=True)
        async for event in stream:
            match event.type:
                case "message_start":
                    input_tokens = event.message.usage.input_tokens
                case "content_block_delta" if event.delta.type == "text_delta":
                    await text.add(event.delta.text)
                case "message_delta":
                    output_tokens = event.usage.output_tokens
                    stop_reason = event.delta.stop_reason or ""
        if not stop_reason:
            raise ProviderOverloaded("stream ended before message_stop", reason="stream_broken")
        return ChatOutcome(
            content=text.text, finish_reason=_FINISH.get(stop_reason, "stop"),
            usage=_usage(input_tokens, output_tokens), ttft_ms=text.ttft_ms,
        )


def _usage(input_tokens: int, output_tokens: int) -> Usage:
    return Usage(prompt_tokens=input_tokens, completion_tokens=output_tokens,
                 total_tokens=input_tokens + output_tokens)
