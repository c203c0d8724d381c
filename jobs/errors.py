"""Errors shared by the API and the workers.

    SwitchyardError                 base; `code` is stable and shown to clients
    ├── NotFound                    the object does not exist *for this caller*
    ├── Conflict                    e.g. an idempotency key reused with another body
    ├── InvalidRequest              input that passed schema validation but is unusable
    │   └── UnknownModel            the model is not in the routes file
    ├── ProviderError               a provider call failed (workers/providers)
    │   ├── ProviderOverloaded      429/5xx/timeouts/broken streams: retry this target, then fall back
    │   ├── TargetUnavailable       skip this target without calling it: fall back at once
    │   │   ├── CircuitOpen         the target's breaker is open (shared by every worker)
    │   │   ├── RateLimited         the target's RPM/TPM budget is spent for now
    │   │   └── ContextTooLong      the prompt does not fit this target's context window
    │   └── ProviderRejected        the provider refused the request itself: fail fast
    ├── AllTargetsFailed            every target of the route failed
    ├── DeadlineExceeded            the job ran out of time
    └── Quarantined                 the job crashed its worker too many times

Retryability is a property of the type (`retryable`), never parsed from a message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SwitchyardError(Exception):
    """Base of every error Switchyard raises on purpose."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(SwitchyardError):
    """The object does not exist, or belongs to someone else (never say which)."""

    code = "not_found"
    status = 404


class Conflict(SwitchyardError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class InvalidRequest(SwitchyardError):
    """Input that is well-formed but cannot be served."""

    code = "invalid_request"
    status = 422


class UnknownModel(InvalidRequest):
    """The requested model is not routed."""

    code = "model_not_found"
    status = 404


class ProviderError(SwitchyardError):
    """A provider call failed."""

    code = "provider_error"
    status = 502
    #: Whether the next target of the route may be tried.
    fallback: ClassVar[bool] = False


class ProviderOverloaded(ProviderError):
    """429, 5xx, timeouts, broken connections: retry this target, then fall back."""

    code = "provider_overloaded"
    retryable = True
    fallback = True

    @property
    def retry_after(self) -> float | None:
        """Seconds the provider asked us to wait (Retry-After), if it said."""
        value = self.extra.get("retry_after")
        return float(value) if value is not None else None

    @property
    def reason(self) -> str:
        """Why: rate_limited, server_error, connection, timeout, stream_broken, malformed."""
        return str(self.extra.get("reason", "unknown"))


class TargetUnavailable(ProviderError):
    """This target cannot take the request now; the next target might."""

    code = "target_unavailable"
    fallback = True


class CircuitOpen(TargetUnavailable):
    """The target failed repeatedly and is cooling down."""

    code = "circuit_open"


class RateLimited(TargetUnavailable):
    """The target's requests- or tokens-per-minute budget is spent."""

    code = "rate_limited"


class ContextTooLong(TargetUnavailable):
    """The prompt does not fit the target's context window."""

    code = "context_too_long"


class AllTargetsFailed(ProviderError):
    """Every target of the route failed; `extra['last']` holds the last error code."""

    code = "all_targets_failed"


class DeadlineExceeded(ProviderError):
    """The job's deadline passed before a target answered."""

    code = "deadline_exceeded"
    status = 504


class Quarantined(SwitchyardError):
    """The job was claimed too many times without finishing (it keeps crashing workers)."""

    code = "job_quarantined"


class ProviderRejected(ProviderError):
    """The provider rejected the request itself (400/401/404): fail fast."""

    code = "provider_rejected"
