"""Waiting for a job's end, for routes that answer with the result (the OpenAI-compatible ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from jobs.errors import JobFailed, SwitchyardError
from jobs.events import Event
from jobs.states import EventType


async def job_result(events: AsyncIterator[Event]) -> dict[str, Any]:
    """The result a job's events end with.

    Raises:
        JobFailed: the job failed or was cancelled (carrying the job's own error code).
    """
    async for event in events:
        if event.type == EventType.SUCCEEDED:
            result: dict[str, Any] = event.data["result"]
            return result
        if event.type in (EventType.FAILED, EventType.CANCELLED):
            raise JobFailed(event.data.get("error") or {})
    raise SwitchyardError("the job's event stream ended without a result")
