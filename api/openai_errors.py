"""Errors on the OpenAI-compatible routes, in OpenAI's shape.

    {"error": {"message", "type", "param", "code", "request_id"}}

The status and `code` are those of the native problem document
(`api/errors.py`), so a client sees the same code on either API; `type` is
OpenAI's error type for the status, which the `openai` SDK maps to its usual
exceptions (`NotFoundError`, `RateLimitError`, ...).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from api.errors import to_problem

#: OpenAI's error `type` by HTTP status (anything else is `api_error`).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
                403: "permission_error", 404: "invalid_request_error", 409: "invalid_request_error",
                413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def openai_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Any error on an OpenAI-compatible route, in OpenAI's error shape (same status and code as the problem)."""
    status, body, headers = to_problem(request, exc)
    error = {"message": body["detail"], "type": _ERROR_TYPES.get(status, "api_error"),
             "param": None, "code": body["code"], "request_id": body.get("request_id")}
    return Response({"error": error}, status_code=status, headers=headers)
