"""Errors shared by the API and the workers.

    SwitchyardError                 base; `code` is stable and shown to clients
    ├── NotFound                    the object does not exist *for this caller*
    ├── Conflict                    e.g. an idempotency key reused with another body
    ├── InvalidRequest              input that passed schema validation but is unusable
    │   └── UnknownModel            the model is not in the routes file
    └── ProviderError               a provider call failed (workers/providers)
        ├── ProviderOverloaded      429/5xx/timeouts: retry this target, then fall back
        └── ProviderRejected        the provider refused the request: fail fast

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


class ProviderOverloaded(ProviderError):
    """429, 5xx, timeouts, broken connections: retry this target, then fall back."""

    code = "provider_overloaded"
    retryable = True


class ProviderRejected(ProviderError):
    """The provider rejected the request itself (400/401/404): fail fast."""

    code = "provider_rejected"
