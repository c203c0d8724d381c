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
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.channels import ChannelsPlugin
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.errors import to_problem
from api.state import Services
from api.streaming import job_events
from api.submission import submit_chat
from jobs import store
from jobs.accounts import Principal
from jobs.errors import JobFailed, StreamReset, SwitchyardError
from jobs.kinds import MAX_MESSAGES, MAX_OUTPUT_TOKENS, ChatCompletionInput, ChatCompletionJob, Message
from jobs.states import EventType

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
                403: "permission_error", 404: "invalid_request_error", 409: "invalid_request_error",
                413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


class ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    """A part of a message's content (only text is supported)."""

    type: Literal["text"]
    text: str


class OpenAIMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message as OpenAI's API takes it."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    """`stream_options`."""

    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The subset of OpenAI's chat completion request that Switchyard serves; other fields are ignored."""

    model: str
    messages: Annotated[list[OpenAIMessage], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


def openai_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Any error on this route, in OpenAI's error shape (same status and code as the native problem)."""
    status, body, headers = to_problem(request, exc)
    error = {"message": body["detail"], "type": _ERROR_TYPES.get(status, "api_error"),
             "param": None, "code": body["code"], "request_id": body.get("request_id")}
    return Response({"error": error}, status_code=status, headers=headers)


def _to_job(req: ChatCompletionRequest) -> ChatCompletionJob:
    messages = []
    for m in req.messages:
        text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        messages.append(Message(role="system" if m.role == "developer" else m.role, content=text, name=m.name))
    return ChatCompletionJob(input=ChatCompletionInput(
        model=req.model, messages=messages, max_tokens=req.max_completion_tokens or req.max_tokens or 1024,
        temperature=req.temperature, stream=req.stream,
    ))


def _completion_id(job: store.JobRow) -> str:
    return f"chatcmpl-{job.id.hex}"


@post("/v1/chat/completions", tags=["openai"], summary="Chat completion (OpenAI-compatible)",
      exception_handlers={Exception: openai_error}, status_code=200)
async def chat_completions(data: ChatCompletionRequest, services: Services, principal: Principal,
                           channels: ChannelsPlugin) -> Any:
    """Run a chat completion as a job and answer in OpenAI's format (streaming with `stream: true`)."""
    outcome = await submit_chat(services, principal, _to_job(data))
    job, created = outcome.job, int(time.time())
    events = job_events(services, channels, job)
    if data.stream:
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        return ServerSentEvent(_chunks(job, data.model, created, events, include_usage))
    async for event in events:
        if event.type == EventType.SUCCEEDED:
            result = event.data["result"]
            return {
                "id": _completion_id(job), "object": "chat.completion", "created": created, "model": data.model,
                "choices": [{"index": 0, "finish_reason": result["finish_reason"],
                             "message": {"role": "assistant", "content": result["content"]}}],
                "usage": {k: result["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
            }
        if event.type in (EventType.FAILED, EventType.CANCELLED):
            raise JobFailed(event.data.get("error") or {})
    raise SwitchyardError("the job's event stream ended without a result")


async def _chunks(job: store.JobRow, model: str, created: int, events: AsyncIterator[Any],
                  include_usage: bool) -> AsyncIterator[ServerSentEventMessage]:
    """The job's events as OpenAI `chat.completion.chunk`s, ending with `[DONE]`."""
    base = {"id": _completion_id(job), "object": "chat.completion.chunk", "created": created, "model": model}

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
                    usage = {k: result["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
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
