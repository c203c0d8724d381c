"""The OpenAPI document tells the truth about errors: `document_errors(app)`.

Litestar documents a handler's errors in its own `{status_code, detail}` shape,
and only the 400 of a body that fails validation. Every operation here answers
any error with a problem document (`api/errors.py`), or OpenAI's error shape on
the OpenAI-compatible routes (`api/openai_errors.py`): this rewrites each
operation's error responses to say so, with one response per status that
Switchyard can answer and the stable codes behind it, all from `error_codes()`
so the document cannot drift from the error tree.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from litestar import Litestar
from litestar.openapi.spec import Components, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, Schema
from litestar.routes import HTTPRoute

from api.errors import PROBLEM_JSON, error_codes
from api.openai_errors import openai_error

_STRING = Schema(type=OpenAPIType.STRING)


def _problem_schema(codes: list[str]) -> Schema:
    """RFC 9457 problem document; more members (`errors`, `limit`, ...) may follow."""
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["type", "title", "status", "detail", "code", "request_id"],
        properties={"type": _STRING, "title": _STRING, "status": Schema(type=OpenAPIType.INTEGER),
                    "detail": _STRING, "code": Schema(type=OpenAPIType.STRING, enum=codes), "request_id": _STRING},
        description="An error: RFC 9457 problem+json with a stable `code` and the `request_id`.",
    )


def _openai_error_schema(codes: list[str]) -> Schema:
    """OpenAI's error body, with the same `code` as the problem document."""
    error = Schema(
        type=OpenAPIType.OBJECT,
        required=["message", "type", "code", "request_id"],
        properties={"message": _STRING, "type": _STRING,
                    "param": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL]),
                    "code": Schema(type=OpenAPIType.STRING, enum=codes), "request_id": _STRING},
    )
    return Schema(type=OpenAPIType.OBJECT, required=["error"], properties={"error": error},
                  description="An error on an OpenAI-compatible route, in OpenAI's shape.")


def _responses(schema_name: str, media_type: str) -> dict[str, OpenAPIResponse]:
    """One response per HTTP status an error can have, naming its codes."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code, (status, _) in error_codes().items():
        if status is not None:
            by_status[status].append(code)
    ref = Reference(ref=f"#/components/schemas/{schema_name}")
    return {str(status): OpenAPIResponse(description="Codes: " + ", ".join(f"`{c}`" for c in sorted(codes)),
                                         content={media_type: OpenAPIMediaType(schema=ref)})
            for status, codes in sorted(by_status.items())}


def document_errors(app: Litestar) -> None:
    """Replace the error responses of every documented operation with the ones the API really sends."""
    document = app.openapi_schema
    codes = sorted(error_codes())
    document.components = document.components or Components()
    document.components.schemas = {**(document.components.schemas or {}), "Problem": _problem_schema(codes),
                                   "OpenAIError": _openai_error_schema(codes)}
    problem, openai = _responses("Problem", PROBLEM_JSON), _responses("OpenAIError", "application/json")
    for route in app.routes:
        path_item = (document.paths or {}).get(route.path_format)
        if not isinstance(route, HTTPRoute) or path_item is None:
            continue
        for handler in route.route_handlers:
            errors = openai if openai_error in handler.resolve_exception_handlers().values() else problem
            for method in handler.http_methods:
                operation: Any = getattr(path_item, method.lower(), None)
                if operation is None or not operation.responses:
                    continue
                ok = {status: r for status, r in operation.responses.items() if int(status) < 400}
                operation.responses = {**ok, **errors}
