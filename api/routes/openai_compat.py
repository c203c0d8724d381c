"""OpenAI-compatible `POST /v1/chat/completions`: an unchanged `openai` SDK works with `base_url` swapped.

Each request is a `chat.completion` job underneath, so it gets routing,
fallback, credits, limits and metrics like any other; the response waits for
the job (or streams its `delta` events as `chat.completion.chunk`s). Errors on
this route use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
so the SDK raises its usual exceptions.

Known difference: if a target fails after streaming text and the job falls
back, native clients get a `reset` event; OpenAI's protocol has no way to
retract text, so this stream ends with an error instead of mixing two answers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import post
from litestar.channels import ChannelsPlugin
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.openai_errors import openai_error
from api.state import Services
from api.streaming import job_events
from api.submission import submit_chat
from api.waiting import job_result
from jobs import store
from jobs.accounts import Principal
from jobs.errors import JobFailed, StreamReset, SwitchyardError
from jobs.openai_format import ChatCompletionRequest, chat_job, completion_body, completion_id, usage_body
from jobs.states import EventType


@post("/v1/chat/completions", tags=["openai"], summary="Chat completion (OpenAI-compatible)",
      exception_handlers={Exception: openai_error}, status_code=200)
async def chat_completions(data: ChatCompletionRequest, services: Services, principal: Principal,
                           channels: ChannelsPlugin) -> Any:
    """Run a chat completion as a job and answer in OpenAI's format (streaming with `stream: true`)."""
    outcome = await submit_chat(services, principal, chat_job(data))
    job, created = outcome.job, int(time.time())
    events = job_events(services, channels, job)
    if data.stream:
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        return ServerSentEvent(_chunks(job, data.model, created, events, include_usage))
    return completion_body(job.id, created, data.model, await job_result(events))


async def _chunks(job: store.JobRow, model: str, created: int, events: AsyncIterator[Any],
                  include_usage: bool) -> AsyncIterator[ServerSentEventMessage]:
    """The job's events as OpenAI `chat.completion.chunk`s, ending with `[DONE]`."""
    base = {"id": completion_id(job.id), "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> ServerSentEventMessage:
        body = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        return ServerSentEventMessage(data=msgspec.json.encode(body).decode())

    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        match event.type:
            case EventType.DELTA:
                yield chunk({"content": event.data["text"]})
            case EventType.RESET:
                yield _stream_error(StreamReset("the provider failed mid-stream; retry the request"))
                return
            case EventType.SUCCEEDED:
                result = event.data["result"]
                yield chunk({}, result["finish_reason"])
                if include_usage:
                    usage = usage_body(result)
                    yield ServerSentEventMessage(data=msgspec.json.encode({**base, "choices": [],
                                                                           "usage": usage}).decode())
                yield ServerSentEventMessage(data="[DONE]")
                return
            case EventType.FAILED | EventType.CANCELLED:
                yield _stream_error(JobFailed(event.data.get("error") or {}))
                return


def _stream_error(exc: SwitchyardError) -> ServerSentEventMessage:
    """An error inside an already started stream, in OpenAI's shape."""
    body = {"message": exc.message, "type": "api_error", "code": exc.public_code, "param": None}
    return ServerSentEventMessage(data=msgspec.json.encode({"error": body}).decode())


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [chat_completions]
