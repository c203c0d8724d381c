"""Every error Switchyard raises on purpose, for the API and the workers alike.

    SwitchyardError                   base; `code` is stable and shown to clients, `status` is the HTTP status
    ├── Unauthenticated               401 unauthorized: no usable credentials
    │   ├── InvalidApiKey             an unknown or revoked API key
    │   ├── InvalidToken              a malformed, forged or expired access token
    │   ├── InvalidRefreshToken       an unknown, revoked or expired refresh token
    │   ├── RefreshTokenReused        a spent refresh token: its whole family is now revoked
    │   └── InvalidCredentials        wrong email or password
    ├── Forbidden                     403: the caller may not do this
    │   └── AccountDisabled           the account is disabled
    ├── NotFound                      404: the object does not exist *for this caller*
    │   ├── UserNotFound              no such user (admin routes)
    │   ├── QueueNotFound             no such queue (admin routes)
    │   ├── TargetNotFound            no such provider target (admin routes)
    │   ├── DeadLetterNotFound        no such dead letter (admin routes)
    │   ├── UnknownPaymentProvider    no webhook for this payment provider
    │   ├── FileNotFound              no such file (or its stored bytes are gone)
    │   ├── BatchNotFound             no such batch
    │   └── VectorStoreNotFound       no such vector store (or the file is not in it)
    ├── Conflict                      409: the request conflicts with the current state
    │   ├── EmailTaken                a user with this email exists
    │   ├── IdempotencyConflict       an Idempotency-Key reused with another body
    │   ├── JobFinished               the job already reached a final state
    │   └── BatchFinished             the batch already reached a final state
    ├── InvalidRequest                422: well-formed input that cannot be served
    │   ├── UnknownModel              404: the model is not in the catalogue
    │   ├── InvalidIdempotencyKey     400: a malformed Idempotency-Key header
    │   ├── InvalidSignature          400: a webhook whose signature is missing, wrong or too old
    │   ├── InvalidPayload            400: a signed webhook whose body is not the expected event
    │   ├── PromptTooLarge            413: the messages are longer than the limit
    │   ├── InvalidUpload             400: not multipart, no `file` part, a missing or invalid `purpose`
    │   ├── FileTooLarge              413: the file is larger than `SWITCHYARD_MAX_FILE_BYTES`
    │   ├── FileQuotaExceeded         413: the user's files would exceed `SWITCHYARD_FILE_QUOTA_BYTES`
    │   ├── WebhookTargetRefused      a callback URL that is not http(s) or resolves to a forbidden address
    │   ├── InvalidBatch              400: a batch that cannot be created (input file purpose, window)
    │   ├── FileNotSearchable         400: a file that is not for search (purpose `batch`), or not processed yet
    │   ├── VectorStoreFull           413: the store holds `SWITCHYARD_MAX_VECTOR_STORE_FILES` files
    │   ├── QueryTooLong              413: a search query longer than `SWITCHYARD_MAX_QUERY_CHARS`
    │   └── FileUnprocessable         a file that cannot be made searchable (a `file.process` job's error)
    │       ├── UnsupportedFileType   415: the content is none of txt, md, html, pdf, docx (whatever its name says)
    │       ├── FileCorrupt           the file is damaged or not what its type claims
    │       ├── FileEncrypted         the PDF or document is password-protected
    │       ├── FileHasNoText         nothing to index: no text layer (a scanned PDF), or an empty document
    │       ├── TooManyPages          413: more pages than `SWITCHYARD_MAX_FILE_PAGES`
    │       └── TooManyChunks         413: more chunks than `SWITCHYARD_MAX_FILE_CHUNKS`
    ├── InsufficientCredits           402: the balance cannot cover the job's worst-case cost
    ├── TooManyRequests               429 rate_limited: the caller's request budget is spent
    │   ├── TooManyConcurrentJobs     the caller has too many unfinished jobs
    │   └── LoginLocked               too many failed logins for the account or address
    ├── ServiceUnavailable            503: a backing service is down for a moment
    │   └── WebhookNotConfigured      the payment provider's webhook secret is not set
    ├── JobFailed                     502: a job the request waited for failed (carries the job's own code)
    ├── StreamReset                   502: an OpenAI-compatible stream's provider failed mid-answer
    ├── WebhookDeliveryFailed         502: a callback's receiver never accepted it (retried; a job's error)
    ├── ProviderError                 502: a provider call failed (workers/providers)
    │   ├── ProviderOverloaded        429/5xx/timeouts/broken streams: retry this target, then fall back
    │   ├── TargetUnavailable         skip this target without calling it: fall back at once
    │   │   ├── CircuitOpen           the target's breaker is open (shared by every worker)
    │   │   ├── RateLimited           the target's RPM/TPM budget is spent for now
    │   │   └── ContextTooLong        the prompt does not fit this target's context window
    │   ├── ProviderRejected          the provider refused the request itself: fail fast
    │   ├── AllTargetsFailed          every target of the route failed
    │   └── DeadlineExceeded          504: the job ran out of time
    └── JobEnded                      why a job ended without a result (its `error`; never an HTTP status)
        ├── Quarantined               the job crashed its worker too many times
        ├── JobExpired                the job was unfinished long after its submission (maintenance failed it)
        ├── DeliveryFailed            Dramatiq gave up on the job's message (dead letter)
        └── JobCancelled              the job was cancelled by request

Provider errors end jobs too (a job's `error.code` is any code of the
`ProviderError` or `JobEnded` subtrees, or `model_not_found` / `invalid_request`; a `webhook.deliver`
job's is `webhook_target_refused` or `webhook_delivery_failed`).

Retryability is a property of the type (`retryable`), never parsed from a
message. Codes are defined here once; `api/errors.py` turns any of these into
a problem document, and `docs/errors.md` lists them (a test keeps it complete).
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

    @property
    def public_code(self) -> str:
        """The code clients see (the class's `code`, except where an error carries another's)."""
        return self.code


# --- Who is calling -----------------------------------------------------------------------------------------


class Unauthenticated(SwitchyardError):
    """No credentials, or credentials that identify nobody."""

    code = "unauthorized"
    status = 401
    #: The `WWW-Authenticate` challenge sent with this error (RFC 6750), if any.
    challenge: ClassVar[str | None] = "Bearer"


class InvalidApiKey(Unauthenticated):
    """The API key is unknown or revoked."""

    code = "invalid_api_key"
    challenge = 'Bearer error="invalid_token"'


class InvalidToken(Unauthenticated):
    """The access token is malformed, forged, expired, or not an access token."""

    code = "invalid_token"
    challenge = 'Bearer error="invalid_token"'


class InvalidRefreshToken(Unauthenticated):
    """The refresh token is unknown, revoked or expired."""

    code = "invalid_refresh_token"
    challenge = None


class RefreshTokenReused(Unauthenticated):
    """The refresh token was already used; every token of its family is now revoked."""

    code = "refresh_token_reused"
    challenge = None


class InvalidCredentials(Unauthenticated):
    """Wrong email or password (never says which)."""

    code = "invalid_credentials"
    challenge = None


class Forbidden(SwitchyardError):
    """The caller is known but may not do this."""

    code = "forbidden"
    status = 403


class AccountDisabled(Forbidden):
    """The account is disabled."""

    code = "account_disabled"


# --- What is asked for ----------------------------------------------------------------------------------------


class NotFound(SwitchyardError):
    """The object does not exist, or belongs to someone else (never say which)."""

    code = "not_found"
    status = 404


class UserNotFound(NotFound):
    """No user with this id."""

    code = "user_not_found"


class QueueNotFound(NotFound):
    """No queue with this name."""

    code = "queue_not_found"


class TargetNotFound(NotFound):
    """No provider target with this name (`provider:model`) in the routes."""

    code = "target_not_found"


class DeadLetterNotFound(NotFound):
    """No dead letter with this message id in this queue."""

    code = "dead_letter_not_found"


class UnknownPaymentProvider(NotFound):
    """No webhook endpoint for this payment provider."""

    code = "unknown_provider"


class FileNotFound(NotFound):
    """No file with this id for this caller (or its stored bytes are missing)."""

    code = "file_not_found"


class BatchNotFound(NotFound):
    """No batch with this id for this caller."""

    code = "batch_not_found"


class VectorStoreNotFound(NotFound):
    """No vector store with this id for this caller (or the file is not in the store)."""

    code = "vector_store_not_found"


class Conflict(SwitchyardError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class EmailTaken(Conflict):
    """A user with this email (case-insensitively) already exists."""

    code = "email_taken"


class IdempotencyConflict(Conflict):
    """The Idempotency-Key was used before with a different request."""

    code = "idempotency_conflict"


class JobFinished(Conflict):
    """The job already reached a final state (it cannot be cancelled)."""

    code = "job_finished"


class BatchFinished(Conflict):
    """The batch already reached a final state."""

    code = "batch_finished"


class InvalidRequest(SwitchyardError):
    """Input that is well-formed but cannot be served."""

    code = "invalid_request"
    status = 422


class UnknownModel(InvalidRequest):
    """The requested model is not routed."""

    code = "model_not_found"
    status = 404


class InvalidIdempotencyKey(InvalidRequest):
    """The Idempotency-Key header is empty or too long."""

    code = "invalid_idempotency_key"
    status = 400


class InvalidSignature(InvalidRequest):
    """The webhook's signature is missing, malformed, wrong or too old."""

    code = "invalid_signature"
    status = 400


class InvalidPayload(InvalidRequest):
    """A correctly signed webhook whose body is not the event we expect."""

    code = "invalid_payload"
    status = 400


class PromptTooLarge(InvalidRequest):
    """The messages of one request total more characters than the limit."""

    code = "prompt_too_large"
    status = 413


class InvalidUpload(InvalidRequest):
    """The upload is not multipart/form-data, has no `file` part, or a missing or invalid `purpose`."""

    code = "invalid_upload"
    status = 400


class FileTooLarge(InvalidRequest):
    """The file is larger than the largest file one upload may be; nothing was stored."""

    code = "file_too_large"
    status = 413


class FileQuotaExceeded(InvalidRequest):
    """The user's files would total more bytes than their quota; nothing was stored."""

    code = "file_quota_exceeded"
    status = 413


class WebhookTargetRefused(InvalidRequest):
    """The callback URL is not http(s), carries credentials, or resolves to a private or reserved address."""

    code = "webhook_target_refused"


# --- Limits and money -----------------------------------------------------------------------------------------


class InvalidBatch(InvalidRequest):
    """The batch cannot be created: its input file is not a `batch` file, or the window is invalid."""

    code = "invalid_batch"
    status = 400


class FileNotSearchable(InvalidRequest):
    """The file cannot be searched: its purpose is not `assistants` or `user_data`, or it failed processing."""

    code = "file_not_searchable"
    status = 400


class VectorStoreFull(InvalidRequest):
    """The vector store already holds the most files one store may."""

    code = "vector_store_full"
    status = 413


class QueryTooLong(InvalidRequest):
    """The search query is longer than the limit."""

    code = "query_too_long"
    status = 413


class FileUnprocessable(InvalidRequest):
    """The file's text cannot be extracted (the error of its `file.process` job, and its `status_details`)."""

    code = "file_unprocessable"


class UnsupportedFileType(FileUnprocessable):
    """The file's content is not txt, markdown, html, pdf or docx (its type is read from its bytes, not its name)."""

    code = "unsupported_file_type"
    status = 415


class FileCorrupt(FileUnprocessable):
    """The file is damaged, truncated, or its bytes are not a valid document of the type they claim."""

    code = "file_corrupt"


class FileEncrypted(FileUnprocessable):
    """The document is encrypted or password-protected."""

    code = "file_encrypted"


class FileHasNoText(FileUnprocessable):
    """The document holds no extractable text (a scanned PDF without a text layer, or an empty file)."""

    code = "file_has_no_text"


class TooManyPages(FileUnprocessable):
    """The document has more pages than one file may."""

    code = "file_too_many_pages"
    status = 413


class TooManyChunks(FileUnprocessable):
    """The document's text makes more chunks than one file may."""

    code = "file_too_many_chunks"
    status = 413


class InsufficientCredits(SwitchyardError):
    """The balance cannot cover the job's worst-case cost."""

    code = "insufficient_credits"
    status = 402


class TooManyRequests(SwitchyardError):
    """The caller's per-minute request budget is spent; `retry_after` says when it refills."""

    code = "rate_limited"
    status = 429


class TooManyConcurrentJobs(TooManyRequests):
    """The caller already has as many unfinished jobs as their tier allows."""

    code = "too_many_concurrent_jobs"


class LoginLocked(TooManyRequests):
    """Too many failed logins for this account or from this address."""

    code = "login_locked"


class ServiceUnavailable(SwitchyardError):
    """A backing service (PostgreSQL, Redis) is briefly unavailable."""

    code = "service_unavailable"
    status = 503


class WebhookNotConfigured(ServiceUnavailable):
    """The payment provider's webhook secret is not configured."""

    code = "webhook_not_configured"


class JobFailed(SwitchyardError):
    """A job that the request waited for (OpenAI-compatible routes) ended without a result."""

    code = "job_failed"
    status = 502

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "the job failed")))
        self.job_code = str(error.get("code", self.code))

    @property
    def public_code(self) -> str:
        """The job's own error code (`provider_rejected`, `all_targets_failed`, …)."""
        return self.job_code


class StreamReset(SwitchyardError):
    """The provider failed after part of a streamed answer was sent; OpenAI's protocol cannot take it back."""

    code = "stream_reset"
    status = 502


class WebhookDeliveryFailed(SwitchyardError):
    """The callback's receiver did not accept it (2xx) in any of its deliveries."""

    code = "webhook_delivery_failed"
    status = 502
    #: One delivery's failure (timeout, refused connection, non-2xx) is worth another delivery.
    retryable = True


# --- Providers ------------------------------------------------------------------------------------------------


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

    code = "target_rate_limited"


class ContextTooLong(TargetUnavailable):
    """The prompt does not fit the target's context window."""

    code = "context_too_long"


class ProviderRejected(ProviderError):
    """The provider rejected the request itself (400/401/404): fail fast."""

    code = "provider_rejected"


class AllTargetsFailed(ProviderError):
    """Every target of the route failed; `last` is the code of the last target's error."""

    code = "all_targets_failed"


class DeadlineExceeded(ProviderError):
    """The job's deadline passed before a target answered."""

    code = "deadline_exceeded"
    status = 504


class JobEnded(SwitchyardError):
    """Why a job ended without a result; stored in the job's `error`, never sent as an HTTP status."""

    code = "job_ended"


class Quarantined(JobEnded):
    """The job was claimed too many times without finishing (it keeps crashing workers)."""

    code = "job_quarantined"


class JobExpired(JobEnded):
    """The job did not finish within the job expiry of its submission; its credits were released."""

    code = "job_expired"


class DeliveryFailed(JobEnded):
    """The job's message was dead-lettered (its deliveries kept failing); its credits were released."""

    code = "delivery_failed"


class JobCancelled(JobEnded):
    """The job was cancelled by request."""

    code = "cancelled"


def error_body(exc: SwitchyardError) -> dict[str, Any]:
    """How a job's failure is stored and shown: a stable code, a message, and details."""
    return {"code": exc.public_code, "message": exc.message,
            **{k: v for k, v in exc.extra.items() if v is not None}}


def every_error() -> list[type[SwitchyardError]]:
    """Every error class of the tree, depth first (for documentation and its test)."""
    found: list[type[SwitchyardError]] = []

    def walk(cls: type[SwitchyardError]) -> None:
        found.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(SwitchyardError)
    return found
