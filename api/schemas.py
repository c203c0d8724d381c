"""Wire schemas of the native API: strict request types and response views.

Job payload types live in `jobs/kinds.py` and are tolerant (an old worker
must skip a newer field). Requests are decoded with `strict()` variants of
the same types, so an unknown field is a 400 naming the field, without
writing every type twice.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Union

import msgspec

from jobs import kinds, store


@cache
def strict(tp: Any) -> Any:
    """The same type, with every Struct in it forbidding unknown fields."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        fields: list[tuple[str, Any, Any]] = []
        for f in msgspec.structs.fields(tp):
            if f.default is not msgspec.NODEFAULT:
                default = f.default
            elif f.default_factory is not msgspec.NODEFAULT:
                default = msgspec.field(default_factory=f.default_factory)
            else:
                fields.append((f.name, strict(f.type)))  # type: ignore[arg-type]
                continue
            fields.append((f.name, strict(f.type), default))
        cfg = tp.__struct_config__
        new = msgspec.defstruct(
            tp.__name__, fields, bases=(tp,), kw_only=True, frozen=cfg.frozen, forbid_unknown_fields=True,
            tag_field=cfg.tag_field, tag=cfg.tag, module=tp.__module__,
        )
        new.__doc__ = tp.__doc__
        return new
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return Annotated[(strict(args[0]), *tp.__metadata__)]
    if origin in (Union, types.UnionType):
        return Union[tuple(strict(a) for a in args)]  # noqa: UP007
    if origin in (list, dict, tuple, set, frozenset):
        return origin[tuple(strict(a) for a in args)]
    return tp


#: `POST /v1/jobs` body.
CreateJob = strict(kinds.JobRequest)


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
            created_at=row.created_at, input=row.payload, metadata=row.metadata,
            started_at=row.started_at, finished_at=row.finished_at, result=row.result,
            error=row.error, usage=row.usage, claims=row.attempts,
            attempts=attempts,
        )


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    data: list[JobView]
    has_more: bool
    next_cursor: str | None
    object: str = "list"
