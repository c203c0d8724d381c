"""Every error a client sees is RFC 9457 problem+json, built here and only here.

    {"type": "https://switchyard.dev/problems/<code>", "title": ..., "status": ...,
     "detail": ..., "code": "<stable code>", "request_id": "...", ...extra}

The `code` is stable and documented; `detail` is for people. Unexpected
exceptions are logged once, here, with the request id, and shown as
`internal_error` without internals.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import psycopg
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
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from loguru import logger

from jobs.errors import SwitchyardError

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://switchyard.dev/problems/"


class ApiError(SwitchyardError):
    """An error raised by the API itself with its own status and code."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.status_code = status
        self.error_code = code


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


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _validation_errors(exc: ValidationException) -> list[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    return [e if isinstance(e, dict) else {"message": str(e)} for e in extra]


def to_problem(request: Request[Any, Any, Any], exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Map any exception to (status, problem document, headers)."""
    rid = request_id_of(request)
    headers: dict[str, str] = {}
    if isinstance(exc, SwitchyardError) and exc.extra.get("retry_after") is not None:
        headers["Retry-After"] = str(exc.extra["retry_after"])
    match exc:
        case ApiError():
            return exc.status_code, problem(exc.status_code, exc.error_code, exc.message, rid, **exc.extra), headers
        case SwitchyardError():
            return exc.status, problem(exc.status, exc.code, exc.message, rid, **exc.extra), headers
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
            code = _HTTP_CODES.get(status, "http_error")
            if status == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
                return status, problem(status, code, "request body is larger than the limit", rid), headers
            headers.update(exc.headers or {})
            return status, problem(status, code, exc.detail, rid), headers
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | psycopg.OperationalError
                  | psycopg_pool.PoolTimeout):
        logger.opt(exception=exc).error("a backing service is unavailable")
        headers["Retry-After"] = "1"
        return 503, problem(503, "service_unavailable", "a backing service is briefly unavailable; retry", rid), headers
    logger.opt(exception=exc).error("unhandled error")
    return 500, problem(500, "internal_error", "internal error; quote the request_id when reporting it", rid), headers


def problem_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Litestar exception handler producing problem+json."""
    status, body, headers = to_problem(request, exc)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
