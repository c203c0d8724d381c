"""OpenAI and any OpenAI-compatible server (Groq, vLLM, LM Studio, the simulator)."""

from __future__ import annotations

from typing import Any

import msgspec
import openai

from jobs.errors import ProviderError, ProviderOverloaded
from jobs.kinds import Usage
from workers.providers.base import (
    ChatOutcome,
    EmbedOutcome,
    EmbedRequest,
    OnDelta,
    StreamedText,
    TargetRequest,
    estimate_tokens,
    guarded,
    map_sdk_error,
)


def map_error(exc: Exception) -> ProviderError:
    """Translate an SDK or transport exception into our error tree."""
    return map_sdk_error(exc, openai, _is_context_error)


def _is_context_error(exc: openai.BadRequestError) -> bool:
    return exc.code == "context_length_exceeded" or "context length" in str(exc.message).lower()


class OpenAIProvider:
    """Chat completions and embeddings through the official `openai` SDK."""

    def __init__(self, name: str, *, base_url: str | None, api_key: str) -> None:
        self.name = name
        # Retries are ours (workers/routing.py), so the SDK must not retry behind our back.
        self.client = openai.AsyncOpenAI(base_url=base_url or None, api_key=api_key, max_retries=0)

    async def chat(self, request: TargetRequest, on_delta: OnDelta | None = None) -> ChatOutcome:
        """Run one completion, streaming when `on_delta` is given."""
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "timeout": request.timeout_seconds,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        call = self._complete(kwargs) if on_delta is None else self._stream(kwargs, StreamedText(on_delta))
        return await guarded(call, map_error)

    async def embed(self, request: EmbedRequest) -> EmbedOutcome:
        """Embed the texts in one `embeddings.create` call, as floats."""
        kwargs: dict[str, Any] = {"model": request.model, "input": request.texts, "encoding_format": "float",
                                  "timeout": request.timeout_seconds}
        if request.dimensions is not None:
            kwargs["dimensions"] = request.dimensions
        return await guarded(self._embed(kwargs), map_error)

    async def _embed(self, kwargs: dict[str, Any]) -> EmbedOutcome:
        response = await self.client.embeddings.create(**kwargs)
        vectors = [list(item.embedding) for item in sorted(response.data, key=lambda item: item.index)]
        # Typed as always present, but some OpenAI-compatible servers leave it out.
        reported: Any = response.usage
        if reported is None:
            prompt, estimated = sum(estimate_tokens(t) for t in kwargs["input"]), True
        else:
            prompt, estimated = reported.prompt_tokens, False
        return EmbedOutcome(vectors=vectors, usage=Usage(prompt_tokens=prompt, total_tokens=prompt,
                                                         estimated=estimated))

    async def _complete(self, kwargs: dict[str, Any]) -> ChatOutcome:
        response = await self.client.chat.completions.create(**kwargs)
        choice = response.choices[0]
        content = choice.message.content or ""
        usage = _usage(response.usage) if response.usage is not None else _estimated(kwargs, content)
        return ChatOutcome(content=content, finish_reason=choice.finish_reason or "stop", usage=usage)

    async def _stream(self, kwargs: dict[str, Any], text: StreamedText) -> ChatOutcome:
        """The SDK sends the request and raises its errors; the chunks are decoded here, with msgspec.

        The SDK's own chunk parsing (pydantic models per token) cost more CPU than everything
        else a streaming job does (ADR 0007: 5.3 vs 1.2 CPU s for 500 streams).
        """
        finish_reason = "stop"
        usage: Usage | None = None
        async with self.client.chat.completions.with_streaming_response.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        ) as response:
            async for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = _decode_chunk(data)
                if chunk.error:
                    raise ProviderOverloaded(f"provider error mid-stream: {chunk.error.get('message')}",
                                             reason="stream_broken")
                if chunk.usage is not None:
                    usage = Usage(prompt_tokens=chunk.usage.prompt_tokens or 0,
                                  completion_tokens=chunk.usage.completion_tokens or 0,
                                  total_tokens=chunk.usage.total_tokens or 0)
                for choice in chunk.choices or ():
                    await text.add(choice.delta.content or "" if choice.delta else "")
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        return ChatOutcome(content=text.text, finish_reason=finish_reason,
                           usage=usage or _estimated(kwargs, text.text), ttft_ms=text.ttft_ms)


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _ChunkUsage(msgspec.Struct):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    total_tokens: int | None = 0


class _Chunk(msgspec.Struct):
    """What a streaming chat completion chunk carries that we use (the rest is skipped unparsed).

    As lenient as the SDK: servers send `null` for lists and counts they have nothing for.
    """

    choices: list[_Choice] | None = None
    usage: _ChunkUsage | None = None
    error: dict[str, Any] | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def _usage(reported: Any) -> Usage:
    return Usage(prompt_tokens=reported.prompt_tokens, completion_tokens=reported.completion_tokens,
                 total_tokens=reported.total_tokens)


def _estimated(kwargs: dict[str, Any], content: str) -> Usage:
    """Usage counted locally when the server sent none."""
    prompt = sum(estimate_tokens(m["content"]) for m in kwargs["messages"])
    completion = estimate_tokens(content)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion, estimated=True)
