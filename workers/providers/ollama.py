"""Local models through the official `ollama` client."""

from __future__ import annotations

from typing import Any

import ollama

from jobs.errors import ContextTooLong, ProviderError, ProviderOverloaded, ProviderRejected
from jobs.kinds import Usage
from workers.providers.base import (
    ChatOutcome,
    EmbedOutcome,
    EmbedRequest,
    OnDelta,
    StreamedText,
    TargetRequest,
    classify_transport,
    guarded,
)

_FINISH = {"stop": "stop", "length": "length"}


def map_error(exc: Exception) -> ProviderError:
    """Translate a client or transport exception into our error tree."""
    match exc:
        case ollama.ResponseError() if exc.status_code == 429 or exc.status_code >= 500:
            return ProviderOverloaded(f"server error ({exc.status_code})", reason="server_error")
        case ollama.ResponseError() if "context" in str(exc.error).lower():
            return ContextTooLong(f"prompt exceeds the model's context window: {exc.error}")
        case ollama.ResponseError():
            return ProviderRejected(f"request rejected ({exc.status_code}): {exc.error}", status=exc.status_code)
    return classify_transport(exc)


class OllamaProvider:
    """Chat completions and embeddings through `ollama.AsyncClient`."""

    def __init__(self, name: str, *, base_url: str | None, api_key: str = "") -> None:
        self.name = name
        self.base_url = base_url
        self._clients: dict[float, ollama.AsyncClient] = {}

    def _client(self, timeout: float) -> ollama.AsyncClient:
        # The ollama client takes its timeout at construction; keep one per timeout.
        if timeout not in self._clients:
            self._clients[timeout] = ollama.AsyncClient(host=self.base_url or None, timeout=timeout)
        return self._clients[timeout]

    async def chat(self, request: TargetRequest, on_delta: OnDelta | None = None) -> ChatOutcome:
        """Run one completion, streaming when `on_delta` is given."""
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        kwargs: dict[str, Any] = {"model": request.model, "messages": messages, "options": options}
        client = self._client(request.timeout_seconds)
        call = self._complete(client, kwargs) if on_delta is None else self._stream(client, kwargs,
                                                                                    StreamedText(on_delta))
        return await guarded(call, map_error)

    async def embed(self, request: EmbedRequest) -> EmbedOutcome:
        """Embed the texts in one `/api/embed` call."""
        client = self._client(request.timeout_seconds)
        return await guarded(self._embed(client, request), map_error)

    async def _embed(self, client: ollama.AsyncClient, request: EmbedRequest) -> EmbedOutcome:
        response = await client.embed(model=request.model, input=request.texts, dimensions=request.dimensions)
        prompt = response.prompt_eval_count or 0
        return EmbedOutcome(vectors=[list(v) for v in response.embeddings],
                            usage=Usage(prompt_tokens=prompt, total_tokens=prompt))

    async def _complete(self, client: ollama.AsyncClient, kwargs: dict[str, Any]) -> ChatOutcome:
        response = await client.chat(**kwargs)
        return _outcome(response.message.content or "", response, None)

    async def _stream(self, client: ollama.AsyncClient, kwargs: dict[str, Any], text: StreamedText) -> ChatOutcome:
        last: Any = None
        async for part in await client.chat(**kwargs, stream=True):
            await text.add(part.message.content or "")
            if part.done:
                last = part
        if last is None:
            raise ProviderOverloaded("stream ended before done", reason="stream_broken")
        return _outcome(text.text, last, text.ttft_ms)


def _outcome(content: str, final: Any, ttft_ms: float | None) -> ChatOutcome:
    prompt = final.prompt_eval_count or 0
    completion = final.eval_count or 0
    return ChatOutcome(
        content=content,
        finish_reason=_FINISH.get(final.done_reason or "stop", "stop"),
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        ttft_ms=ttft_ms,
    )
