"""The contract: job kinds and their msgspec input/result types.

Payload types here are tolerant (unknown fields are ignored) so an older
worker can run a job written by a newer API; the API decodes requests with a
strict variant of the same types (`api/schemas.py`) that names unknown fields.
New fields always get defaults; never rename or retype a field.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from jobs.states import Kind, Queue

#: Hard caps, visible in the OpenAPI schema.
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 200_000
MAX_OUTPUT_TOKENS = 32_768
MAX_METADATA_KEYS = 16

ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Metadata = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=64)], Annotated[str, msgspec.Meta(max_length=512)]],
    msgspec.Meta(max_length=MAX_METADATA_KEYS),
]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_CHARS)]
    name: str | None = None


class ChatCompletionInput(msgspec.Struct, frozen=True, kw_only=True):
    """Input of a `chat.completion` job."""

    model: ModelName
    messages: Annotated[list[Message], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_OUTPUT_TOKENS)] = 1024
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    #: Publish `delta` events while the completion is generated.
    stream: bool = False
    #: Allow falling back to the route's next target when one fails.
    fallback: bool = True


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token usage of one completion; `estimated` when counted locally."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False


class ChatCompletionResult(msgspec.Struct, frozen=True, kw_only=True):
    """Result of a `chat.completion` job."""

    content: str
    finish_reason: str
    model: str
    provider: str
    provider_model: str
    usage: Usage


class ChatCompletionJob(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag=str(Kind.CHAT_COMPLETION)):
    """A request to run a chat completion."""

    input: ChatCompletionInput
    metadata: Metadata | None = None
    #: `bulk` routes to the `chat.bulk` queue so it never delays interactive traffic.
    priority: Literal["interactive", "bulk"] = "interactive"


#: Every job a client can submit (a tagged union on `kind`).
JobRequest = ChatCompletionJob

#: The input type of each kind, used by workers to decode payloads.
INPUT_TYPES: dict[str, type[msgspec.Struct]] = {Kind.CHAT_COMPLETION: ChatCompletionInput}


def queue_for(request: JobRequest) -> Queue:
    """The Dramatiq queue a request goes to."""
    match request:
        case ChatCompletionJob(priority="bulk"):
            return Queue.CHAT_BULK
        case ChatCompletionJob():
            return Queue.CHAT
