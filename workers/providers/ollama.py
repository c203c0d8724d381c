"""Local models through the official `ollama` client."""

from __future__ import annotations

import time
from typing import Any

import ollama

from jobs.errors import ContextTooLong, ProviderError, ProviderOverloaded, ProviderRejected
from jobs.kinds import Usage
from workers.providers.base import ChatOutcome, ChatRequest, OnDelta, classify_transport

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
    """Chat completions through `ollama.AsyncClient`."""

    def __init__(self, name: str, *, base_url: str | None, api_key: str = "") -> None:
        self.name = name
        self.base_url = base_url
        self._clients: dict[float, ollama.AsyncClient] = {}

    def _client(self, timeout: float) -> ollama.AsyncClient:
        # The ollama client takes its timeout at construction; keep one per timeout.
        if timeout not in self._clients:
            self._clients[timeout] = ollama.AsyncClient(host=self.base_url or None, timeout=timeout)
        return self._clients[timeout]

    async def chat(self, request: ChatRequest, on_delta: OnDelta | None = None) -> ChatOutcome:
        """Run one completion, streaming when `on_delta` is given."""
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        client = self._client(request.timeout_seconds)
        try:
            if on_delta is None:
                response = await client.chat(model=request.model, messages=messages, options=options)
                return _outcome(response.message.content or "", response, None)
            started = time.perf_counter()
            ttft_ms: float | None = None
            parts: list[str] = []
            last: Any = None
            async for part in await client.chat(
                model=request.model, messages=messages, options=options, stream=True
            ):
                text = part.message.content or ""
                if text:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - started) * 1000
                    parts.append(text)
                    await on_delta(text)
                if part.done:
                    last = part
            if last is None:
                raise ProviderOverloaded("stream ended before done", reason="stream_broken")
            return _outcome("".join(parts), last, ttft_ms)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_error(exc) from exc


def _outcome(content: str, final: Any, ttft_ms: float | None) -> ChatOutcome:
    prompt = final.prompt_eval_count or 0
    completion = final.eval_count or 0
    return ChatOutcome(
        content=content,
        finish_reason=_FINISH.get(final.done_reason or "stop", "stop"),
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        ttft_ms=ttft_ms,
    )
