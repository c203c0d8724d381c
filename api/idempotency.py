"""`Idempotency-Key` on creating routes (Stripe semantics), in one place.

The same key and body return the original object (with `Idempotent-Replayed:
true`); the same key with another body — or on another kind of object — is
409 `idempotency_conflict`. Keys are scoped to the caller (unique per owner).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response
from litestar.status_codes import HTTP_202_ACCEPTED

from api.views import JobView
from jobs.enqueue import Submitted, request_fingerprint
from jobs.errors import IdempotencyConflict, InvalidIdempotencyKey

MAX_IDEMPOTENCY_KEY = 255


def fingerprint(key: str | None, data: Any) -> bytes | None:
    """What the key is bound to (None without a key); rejects malformed keys with 400."""
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidIdempotencyKey(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    return request_fingerprint(msgspec.json.encode(data))


def check_replay(outcome: Submitted, fingerprint: bytes | None, kind: str,
                 conflict: str = "this Idempotency-Key was already used with a different request body") -> None:
    """Raise 409 `idempotency_conflict` (saying `conflict`) when a replayed key was bound to another request."""
    if not outcome.created and (outcome.job.request_hash != fingerprint or outcome.job.kind != kind):
        raise IdempotencyConflict(conflict)


def accepted_job(outcome: Submitted, fingerprint: bytes | None, kind: str) -> Response[JobView]:
    """The 202 for a submitted job, or 409 when its key was used for something else."""
    check_replay(outcome, fingerprint, kind)
    headers = {"Location": f"/v1/jobs/{outcome.job.id}"}
    if not outcome.created:
        headers["Idempotent-Replayed"] = "true"
    return Response(JobView.of(outcome.job), status_code=HTTP_202_ACCEPTED, headers=headers)
