"""Finding the caller's objects by the ids in a path: anything not theirs is simply not found."""

from __future__ import annotations

from uuid import UUID

from api.state import Services
from jobs import store
from jobs.accounts import Principal
from jobs.errors import NotFound


def parse_id(value: str, what: str = "job") -> UUID:
    """An object id from a path; a malformed id is simply not found."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


def owner_filter(principal: Principal) -> UUID | None:
    """Whose objects the caller may see: their own, or anyone's for an admin (None)."""
    return None if principal.is_admin else principal.user_id


async def load_job(services: Services, principal: Principal, job_id: str) -> store.JobRow:
    """A job the caller may see, or 404 (another owner's job is indistinguishable from none)."""
    row = await store.get_job(services.pool, parse_id(job_id), owner_filter(principal))
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    return row
