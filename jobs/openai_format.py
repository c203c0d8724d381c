"""OpenAI's request and response shapes, translated to and from our job kinds.

The OpenAI-compatible routes (`api/routes/openai_compat.py`, `.../embeddings.py`)
and batch lines (`jobs/batches.py`, whose `body` is exactly such a request and
whose output lines carry exactly such responses) share these, so a request
means the same thing on every path.
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from jobs.kinds import (
    MAX_EMBED_INPUTS,
    MAX_MESSAGES,
    MAX_OUTPUT_TOKENS,
    ChatCompletionInput,
    ChatCompletionJob,
    EmbeddingInput,
    EmbeddingJob,
    EmbedText,
    Message,
)


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


T = TypeVar("T")


class OpenAIList(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """OpenAI's list shape (files, batches); pass `last_id` as `after` for the next page."""

    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: str = "list"


L = TypeVar("L", bound=OpenAIList[Any])


def openai_page(into: type[L], items: list[Any], has_more: bool) -> L:
    """A page of `items` (each with an `id`) as the list type `into`."""
    return into(data=items, first_id=items[0].id if items else None, last_id=items[-1].id if items else None,
                has_more=has_more)


def chat_job(req: ChatCompletionRequest, *, bulk: bool = False) -> ChatCompletionJob:
    """The `chat.completion` job an OpenAI chat request asks for (`bulk`: on the bulk lane)."""
    messages = []
    for m in req.messages:
        text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        messages.append(Message(role="system" if m.role == "developer" else m.role, content=text, name=m.name))
    return ChatCompletionJob(
        input=ChatCompletionInput(
            model=req.model, messages=messages, max_tokens=req.max_completion_tokens or req.max_tokens or 1024,
            temperature=req.temperature, stream=req.stream and not bulk,
        ),
        priority="bulk" if bulk else "interactive",
    )


def completion_id(job_id: Any) -> str:
    """The `chatcmpl-…` id of the completion a job produced."""
    return f"chatcmpl-{job_id.hex}"


def usage_body(result: dict[str, Any]) -> dict[str, int]:
    """OpenAI's `usage` of a chat result."""
    return {k: result["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def completion_body(job_id: Any, created: int, model: str, result: dict[str, Any]) -> dict[str, Any]:
    """A `chat.completion` object for a `chat.completion` job's result."""
    return {
        "id": completion_id(job_id), "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "finish_reason": result["finish_reason"],
                     "message": {"role": "assistant", "content": result["content"]}}],
        "usage": usage_body(result),
    }


# --- Embeddings -------------------------------------------------------------------------------------------------

#: How `/v1/embeddings` returns vectors: JSON floats, or base64 of little-endian float32s.
EncodingFormat = Literal["float", "base64"]


class EmbeddingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The subset of OpenAI's embeddings request that Switchyard serves; other fields are ignored."""

    model: str
    #: A string or a list of strings. OpenAI's token-id arrays parse but are refused (400): routes take text.
    input: EmbedText | Annotated[list[EmbedText | int | list[int]],
                                 msgspec.Meta(min_length=1, max_length=MAX_EMBED_INPUTS)]
    encoding_format: EncodingFormat = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=8192)] | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        # Raised while decoding, so msgspec turns it into the request's 400 validation error.
        if not isinstance(self.input, str) and not all(isinstance(item, str) for item in self.input):
            raise ValueError("input: token-id arrays are not supported; send text (a string or an array of strings)")


def embedding_job(req: EmbeddingRequest, *, bulk: bool = False) -> EmbeddingJob:
    """The `embedding` job an OpenAI embeddings request asks for (`bulk`: on the bulk lane)."""
    texts = req.input if isinstance(req.input, str) else [item for item in req.input if isinstance(item, str)]
    return EmbeddingJob(
        input=EmbeddingInput(model=req.model, input=texts, dimensions=req.dimensions),
        priority="bulk" if bulk else "interactive",
    )


def embedding_body(result: dict[str, Any], encoding_format: EncodingFormat, model: str) -> dict[str, Any]:
    """OpenAI's embeddings response (`object: list`) for an `embedding` job's result."""
    encode = _base64 if encoding_format == "base64" else list
    tokens = result["usage"]["prompt_tokens"]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(vector)}
                 for i, vector in enumerate(result["data"])],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _base64(vector: list[float]) -> str:
    """A vector as OpenAI's `encoding_format: base64` sends it: little-endian float32s."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
