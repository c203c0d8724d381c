"""The contract: every job kind, its input and its result, in one tagged union.

    Job = ChatCompletionJob | EmbeddingJob | FileProcessJob | WebhookJob | TopUpJob | GrantJob   (tag: `kind`)

A job is `{"kind": ..., "input": {...}}`. Clients submit the members of
`ClientJob`; the other kinds are enqueued by the platform itself (payment
webhooks, admins). The `jobs` row stores `kind` and `input` in columns of
those names, and a worker decodes the row back into its `Job` once
(`decode_job`) and dispatches on the kind (`workers/handlers/`).

Input types are tolerant (unknown fields are ignored) so an older worker can
run a job written by a newer API; the API decodes requests with a strict
variant of the same types (`api/strict.py`) that names unknown fields. New
fields always get defaults; never rename or retype a field.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args
from uuid import UUID

import msgspec

from jobs.states import Kind, Queue

#: Hard caps, visible in the OpenAPI schema.
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 200_000
MAX_OUTPUT_TOKENS = 32_768
MAX_METADATA_KEYS = 16
#: The most credits one payment or grant may add (a typo guard, not a business limit).
MAX_CREDITS = 10**12

ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Metadata = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=64)], Annotated[str, msgspec.Meta(max_length=512)]],
    msgspec.Meta(max_length=MAX_METADATA_KEYS),
]
Credits = Annotated[int, msgspec.Meta(ge=1, le=MAX_CREDITS)]
#: Inputs of one embedding job, and characters of each (OpenAI's limits: 2048 inputs, ~8k tokens each).
MAX_EMBED_INPUTS = 2048
MAX_EMBED_CHARS = 32_768
#: Where a finished job or batch is reported (`webhook.deliver`); http(s) only, checked again on delivery.
CallbackUrl = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s/?#]+")]


# --- chat.completion ------------------------------------------------------------------------------------------


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
    """A chat completion."""

    input: ChatCompletionInput
    metadata: Metadata | None = None
    #: `bulk` routes to the `chat.bulk` queue so it never delays interactive traffic.
    priority: Literal["interactive", "bulk"] = "interactive"
    #: POSTed a signed `job.succeeded` / `job.failed` / `job.cancelled` when the job ends.
    callback_url: CallbackUrl | None = None

    #: Every queue this kind may run on.
    lanes: ClassVar[tuple[Queue, ...]] = (Queue.CHAT, Queue.CHAT_BULK)

    @property
    def queue(self) -> Queue:
        """The queue this job goes to."""
        return Queue.CHAT_BULK if self.priority == "bulk" else Queue.CHAT


# --- embedding ----------------------------------------------------------------------------------------------

EmbedText = Annotated[str, msgspec.Meta(max_length=MAX_EMBED_CHARS)]


class EmbeddingInput(msgspec.Struct, frozen=True, kw_only=True):
    """Input of an `embedding` job: one text or a list of them."""

    model: ModelName
    input: EmbedText | Annotated[list[EmbedText], msgspec.Meta(min_length=1, max_length=MAX_EMBED_INPUTS)]
    #: Shorter vectors, where the model allows it.
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=8192)] | None = None
    #: Allow falling back to the route's next target when one fails.
    fallback: bool = True

    @property
    def texts(self) -> list[str]:
        """The input as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingResult(msgspec.Struct, frozen=True, kw_only=True):
    """Result of an `embedding` job: one vector per input, in input order."""

    data: list[list[float]]
    model: str
    provider: str
    provider_model: str
    usage: Usage


class EmbeddingJob(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag=str(Kind.EMBEDDING)):
    """Embeddings of texts."""

    input: EmbeddingInput
    metadata: Metadata | None = None
    #: `bulk` runs on the bulk lane (`chat.bulk`, where batch lines go), away from interactive traffic.
    priority: Literal["interactive", "bulk"] = "interactive"
    callback_url: CallbackUrl | None = None

    lanes: ClassVar[tuple[Queue, ...]] = (Queue.EMBEDDINGS, Queue.CHAT_BULK)

    @property
    def queue(self) -> Queue:
        """The queue this job goes to."""
        return Queue.CHAT_BULK if self.priority == "bulk" else Queue.EMBEDDINGS


# --- file.process -----------------------------------------------------------------------------------------------


class FileProcessInput(msgspec.Struct, frozen=True, kw_only=True):
    """Input of a `file.process` job: make one of the owner's files searchable."""

    file_id: str
    #: The embedding route of the chunks (`SWITCHYARD_KNOWLEDGE_EMBEDDING_MODEL` when the job was created).
    model: ModelName
    chunk_tokens: Annotated[int, msgspec.Meta(ge=16, le=8192)] = 512
    overlap_tokens: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 64
    fallback: bool = True


class FileProcessResult(msgspec.Struct, frozen=True, kw_only=True):
    """Result of a `file.process` job: what was found in the file and stored."""

    file_id: str
    #: The type read from the content: `pdf`, `docx`, `html`, `markdown` or `text`.
    type: str
    pages: int
    characters: int
    chunks: int
    dimensions: int
    model: str
    provider: str
    provider_model: str
    usage: Usage


class FileProcessJob(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag=str(Kind.FILE_PROCESS)):
    """Extract, chunk and embed a file (started by uploads for search, and by reprocessing)."""

    input: FileProcessInput
    metadata: Metadata | None = None
    callback_url: CallbackUrl | None = None

    lanes: ClassVar[tuple[Queue, ...]] = (Queue.FILES,)

    @property
    def queue(self) -> Queue:
        """The queue this job goes to."""
        return Queue.FILES


# --- webhook.deliver --------------------------------------------------------------------------------------------


class WebhookInput(msgspec.Struct, frozen=True, kw_only=True):
    """Input of a `webhook.deliver` job: one event, POSTed signed to `url` until it is accepted."""

    url: CallbackUrl
    #: Standard Webhooks `webhook-id`: the same on every retry, so receivers can drop duplicates.
    webhook_id: str
    #: `job.succeeded`, `job.failed`, `job.cancelled`, `batch.completed`, `batch.failed`, ...
    type: str
    #: What the event is about (the job's or the batch's id).
    subject: str
    #: The event's `data` (the job or batch as its API shows it).
    data: dict[str, Any]


class WebhookResult(msgspec.Struct, frozen=True, kw_only=True):
    """Result of a `webhook.deliver` job."""

    #: The receiver's answer to the delivery that was accepted (2xx).
    status_code: int
    #: Deliveries made, the accepted one included.
    deliveries: int


class WebhookJob(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag=str(Kind.WEBHOOK_DELIVER)):
    """A signed completion callback."""

    input: WebhookInput
    metadata: Metadata | None = None

    lanes: ClassVar[tuple[Queue, ...]] = (Queue.WEBHOOKS,)

    @property
    def queue(self) -> Queue:
        """The queue this job goes to."""
        return Queue.WEBHOOKS


# --- billing.* --------------------------------------------------------------------------------------------------


class TopUpInput(msgspec.Struct, frozen=True, kw_only=True):
    """Input of a `billing.topup` job: credit a verified payment, once per `payment_id`."""

    user_id: UUID
    payment_id: str
    credits: Credits
    provider: str
    amount: int
    currency: str


class GrantInput(msgspec.Struct, frozen=True, kw_only=True):
    """Input of a `billing.grant` job: credits given by an admin, once per `reference`."""

    user_id: UUID
    credits: Credits
    reason: str
    #: `grant:<uuid>`: the ledger reference, fixed when the grant is requested.
    reference: str
    granted_by: UUID | None = None


class BillingResult(msgspec.Struct, frozen=True, kw_only=True):
    """Result of a billing job."""

    #: Credits this run added (0 when the reference was credited before).
    credited: int
    #: The balance after crediting; None when nothing was credited.
    balance: int | None
    #: The reference had been credited already (a redelivery, or the same payment reported twice).
    duplicate: bool


class _BillingJob(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """What every billing kind shares: the `billing` queue."""

    metadata: Metadata | None = None

    lanes: ClassVar[tuple[Queue, ...]] = (Queue.BILLING,)

    @property
    def queue(self) -> Queue:
        """The queue this job goes to."""
        return Queue.BILLING


class TopUpJob(_BillingJob, frozen=True, kw_only=True, tag=str(Kind.BILLING_TOPUP)):
    """Credits from a verified payment webhook."""

    input: TopUpInput


class GrantJob(_BillingJob, frozen=True, kw_only=True, tag=str(Kind.BILLING_GRANT)):
    """Credits granted by an admin."""

    input: GrantInput


# --- The union --------------------------------------------------------------------------------------------------

#: Every job kind (a tagged union on `kind`).
Job = ChatCompletionJob | EmbeddingJob | FileProcessJob | WebhookJob | TopUpJob | GrantJob

#: The kinds a client may submit on `POST /v1/jobs`.
ClientJob = ChatCompletionJob | EmbeddingJob

#: Each kind's job type, by its tag.
JOB_TYPES: dict[str, type[Job]] = {t.__struct_config__.tag: t for t in get_args(Job)}

#: Every queue some kind runs on (workers declare one actor for each).
LANES: tuple[Queue, ...] = tuple(q for q in Queue if any(q in t.lanes for t in JOB_TYPES.values()))


def decode_job(kind: str, input: dict[str, Any]) -> Job:
    """A stored job (its `kind` and `input` columns) as its typed `Job`.

    Raises:
        msgspec.ValidationError: the input does not fit the kind (or the kind is unknown).
    """
    return msgspec.convert({"kind": kind, "input": input}, Job)
