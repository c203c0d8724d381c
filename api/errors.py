"""Every error a client sees is RFC 9457 problem+json, built here and only here.

    {"type": "https://switchyard.dev/problems/<code>", "title": ..., "status": ...,
     "detail": ..., "code": "<stable code>", "request_id": "...", ...extra}

The `code` is stable and documented (`docs/errors.md`, and the OpenAPI
description, both from `error_codes()`); `detail` is for people. Domain
errors come from the `jobs/errors.py` tree; the few codes below belong to the
HTTP layer itself (bodies that do not parse, unknown paths). Unexpected
exceptions are logged once, here, with the request id, and shown as
`internal_error` without internals.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
import redis.exceptions
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)
from loguru import logger

from jobs.errors import JobEnded, ServiceUnavailable, SwitchyardError, every_error

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://switchyard.dev/problems/"

#: Codes of the HTTP layer (not raised by Switchyard code): code -> (status, meaning).
HTTP_CODES: dict[str, tuple[int, str]] = {
    "validation_error": (400, "The body or a parameter does not match the schema; `errors` names each field."),
    "invalid_json": (400, "The body is not valid JSON."),
    "bad_request": (400, "The request is malformed."),
    "method_not_allowed": (405, "The path does not take this method."),
    "body_too_large": (413, "The body is larger than `SWITCHYARD_MAX_BODY_BYTES`."),
    "unsupported_media_type": (415, "The body's content type is not accepted here."),
    "http_error": (400, "Any other refusal of the HTTP layer (the status says which)."),
    "internal_error": (500, "An unexpected failure; quote the `request_id` when reporting it."),
}
#: Litestar's HTTP exceptions by status -> our code.
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "body_too_large", 415: "unsupported_media_type",
                 429: "rate_limited"}


def error_codes() -> dict[str, tuple[int | None, str]]:
    """Every code a client can get: code -> (HTTP status, or None for a job's error only; what it means)."""
    codes: dict[str, tuple[int | None, str]] = {
        cls.code: (None if issubclass(cls, JobEnded) else cls.status, (cls.__doc__ or "").strip().splitlines()[0])
        for cls in every_error()}
    return {**codes, **HTTP_CODES}


def problem(status: int, code: str, detail: str, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """The problem document."""
    return {
        "type": PROBLEM_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
        **extra,
    }


def request_id_of(request: Request[Any, Any, Any]) -> str | None:
    """The request id assigned by the request-id middleware."""
    return request.scope.get("state", {}).get("request_id")


def _validation_errors(exc: ValidationException) -> list[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    return [e if isinstance(e, dict) else {"message": str(e)} for e in extra]


def _ours(exc: SwitchyardError, rid: str | None, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    if exc.extra.get("retry_after") is not None:
        headers["Retry-After"] = str(exc.extra["retry_after"])
    if challenge := getattr(exc, "challenge", None):
        headers["WWW-Authenticate"] = challenge
    return exc.status, problem(exc.status, exc.public_code, exc.message, rid, **exc.extra)


def _unstorable_text(exc: Exception) -> bool:
    """Text PostgreSQL refuses: a NUL in a `text` value (psycopg refuses it before sending, with no
    SQLSTATE) or `\\u0000` in a `jsonb` one. Only a client's input can carry one, so it is a 400."""
    refused_by_psycopg = type(exc) is psycopg.DataError and exc.sqlstate is None
    return refused_by_psycopg or isinstance(exc, psycopg.errors.UntranslatableCharacter
                                            | psycopg.errors.CharacterNotInRepertoire)


def to_problem(request: Request[Any, Any, Any], exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Map any exception to (status, problem document, headers)."""
    rid = request_id_of(request)
    headers: dict[str, str] = {}
    match exc:
        case SwitchyardError():
            return (*_ours(exc, rid, headers), headers)
        case ValidationException():
            errors = _validation_errors(exc)
            detail = "; ".join(e.get("message", "") for e in errors) or exc.detail
            return 400, problem(400, "validation_error", detail, rid, errors=errors), headers
        case NotAuthorizedException():
            headers["WWW-Authenticate"] = "Bearer"
            return 401, problem(401, "unauthorized", exc.detail, rid), headers
        case PermissionDeniedException():
            return 403, problem(403, "forbidden", exc.detail, rid), headers
        case HTTPException() if isinstance(exc.__cause__, SerializationException):
            return 400, problem(400, "invalid_json", f"request body is not valid JSON: {exc.detail}", rid), headers
        case NotFoundException():
            return 404, problem(404, "not_found", "no such resource", rid), headers
        case HTTPException():
            status = exc.status_code
            code = _STATUS_CODES.get(status, "http_error")
            if code == "body_too_large":
                return status, problem(status, code, "request body is larger than the limit", rid), headers
            headers.update(exc.headers or {})
            return status, problem(status, code, exc.detail, rid), headers
    if _unstorable_text(exc):
        return 400, problem(400, "bad_request", "text in the request contains a NUL (\\u0000) character, "
                                                "which cannot be stored", rid), headers
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | psycopg.OperationalError
                  | psycopg_pool.PoolTimeout):
        logger.opt(exception=exc).error("a backing service is unavailable")
        outage = ServiceUnavailable("a backing service is briefly unavailable; retry", retry_after=1)
        return (*_ours(outage, rid, headers), headers)
    logger.opt(exception=exc).error("unhandled error")
    return 500, problem(500, "internal_error", "internal error; quote the request_id when reporting it", rid), headers


def problem_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Litestar exception handler producing problem+json."""
    status, body, headers = to_problem(request, exc)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def openapi_error_table() -> str:
    """The error codes as a Markdown table, for the OpenAPI description."""
    rows = [f"| `{code}` | {status or 'job'} | {meaning} |"
            for code, (status, meaning) in sorted(error_codes().items())]
    return "\n".join(["| code | status | meaning |", "|---|---|---|", *rows])


if __name__ == "__main__":  # the table of docs/errors.md
    print(openapi_error_table())
