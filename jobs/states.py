"""The job state machine.

    queued ──► running ──► succeeded | failed | cancelled
       ▲          │
       └──────────┘  (retry, or a lease that expired)

Every transition is a conditional UPDATE in `jobs/store.py`, so a duplicate
delivery can never run a job twice or overwrite a terminal state.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States a job never leaves.
TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


class Queue(StrEnum):
    """Dramatiq queue names. Interactive and bulk traffic never share a queue."""

    CHAT = "chat"
    CHAT_BULK = "chat.bulk"
    EMBEDDINGS = "embeddings"
    FILES = "files"
    BILLING = "billing"
    WEBHOOKS = "webhooks"


class Kind(StrEnum):
    """Job kinds."""

    CHAT_COMPLETION = "chat.completion"
    #: Embeddings of a list of texts.
    EMBEDDING = "embedding"
    #: One signed completion callback (`callback_url` of a job or batch), retried with back-off.
    WEBHOOK_DELIVER = "webhook.deliver"
    #: Extract, chunk and embed one uploaded file so it can be searched.
    FILE_PROCESS = "file.process"
    #: Credits from a verified payment webhook (idempotent by payment id).
    BILLING_TOPUP = "billing.topup"
    #: Credits granted by an admin.
    BILLING_GRANT = "billing.grant"


class EventType(StrEnum):
    """Types of per-job events, in the order a job can emit them."""

    QUEUED = "queued"
    STARTED = "started"
    DELTA = "delta"
    RETRYING = "retrying"
    FALLBACK = "fallback"
    RESET = "reset"
    #: A long job moved on: `{"stage": "extracting" | "chunking" | "embedding" | "storing", "done", "total"}`.
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: A batch's counts moved (published under the batch's id, on its owner's channel).
    BATCH_PROGRESS = "batch.progress"


#: Event types after which a job emits nothing more.
TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})
