"""Views shown by more than one resource: a job (the jobs routes, admin grants, webhooks' jobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from jobs import store


class JobView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A job as clients see it."""

    id: str
    kind: str
    status: str
    queue: str
    created_at: datetime
    input: dict[str, Any]
    #: Deliveries that claimed the job (1 unless it was retried or reclaimed).
    claims: int
    object: str = "job"
    metadata: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    #: Provider calls, only on `GET /v1/jobs/{id}`.
    attempts: list[store.AttemptRow] | None = None

    @classmethod
    def of(cls, row: store.JobRow, attempts: list[store.AttemptRow] | None = None) -> JobView:
        """The view of a job row."""
        return cls(
            id=str(row.id), kind=row.kind, status=row.status, queue=row.queue,
            created_at=row.created_at, input=row.input, metadata=row.metadata,
            started_at=row.started_at, finished_at=row.finished_at, result=row.result,
            error=row.error, usage=row.usage, claims=row.attempts,
            attempts=attempts,
        )
