"""Rendering the dashboard: pages or htmx partials, flash messages, and errors as pages.

An htmx request (`HX-Request: true`) gets the fragment it swaps, with the
flash message swapped out of band; any other request gets a whole page. An
error becomes the flash (htmx) or an error page; a missing or refused session
sends the browser to the login page (htmx: 401/403 with `HX-Redirect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeVar
from urllib.parse import quote
from uuid import UUID

from litestar import Request, Response
from litestar.response import Redirect, Template

from api.dashboard import PREFIX
from api.dashboard.session import operator_of
from api.errors import to_problem
from jobs.errors import Forbidden, InvalidRequest, Unauthenticated
from jobs.settings import get_settings

LOGIN = f"{PREFIX}/login"

#: Sent with every dashboard page: nothing loads from elsewhere, no page frames it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Flash:
    """A one-line message above the page."""

    kind: Literal["ok", "error"]
    text: str


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    """Whether htmx sent the request (it swaps a fragment) rather than the browser (it shows a page)."""
    return request.headers.get("hx-request") == "true"


def secure(request: Request[Any, Any, Any]) -> bool:
    """Whether cookies are `Secure`: always with `SWITCHYARD_SECURE_COOKIES`, else when the request came over HTTPS."""
    return get_settings().secure_cookies or request.url.scheme == "https"


def page(template: str, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any) -> Template:
    """A page (or fragment) rendered from `template`."""
    return Template(template_name=template, context=context, status_code=status_code,
                    headers={**SECURITY_HEADERS, **(headers or {})})


def back_to(path: str) -> Redirect:
    """After an action posted without htmx (no JavaScript): back to the page it came from."""
    return Redirect(path=path, status_code=303, headers=SECURITY_HEADERS)


def safe_next(target: str | None) -> str:
    """A dashboard path to return to after the login; anything else (another site, say) is the home page."""
    if target and target.startswith(PREFIX) and not target.startswith(("//", LOGIN)) and "\\" not in target:
        return target
    return PREFIX


def choice(value: str | None, enum: type[E], what: str) -> E | None:
    """A filter's value as `enum` (None when empty).

    Raises:
        InvalidRequest: not one of the enum's values.
    """
    if not value:
        return None
    try:
        return enum(value)
    except ValueError:
        raise InvalidRequest(f"unknown {what} {value!r}", available=[str(e) for e in enum]) from None


def uuid_or_none(value: str | None, what: str) -> UUID | None:
    """A filter's value as a UUID (None when empty).

    Raises:
        InvalidRequest: not a UUID.
    """
    if not value or not value.strip():
        return None
    try:
        return UUID(value.strip())
    except ValueError:
        raise InvalidRequest(f"{what} must be a UUID, not {value!r}") from None


def _to_login(request: Request[Any, Any, Any], status: int) -> Response[Any]:
    if is_htmx(request):
        # htmx follows HX-Redirect whatever the status: the whole page goes to the login form.
        return Response(content="", status_code=status, headers={"HX-Redirect": LOGIN, **SECURITY_HEADERS})
    if "text/event-stream" in request.headers.get("accept", ""):
        # The live queue table's EventSource: a 4xx ends it (a redirect would be a page it cannot show).
        return Response(content="", status_code=status, headers=SECURITY_HEADERS)
    target = LOGIN
    if request.method == "GET" and request.url.path != LOGIN:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target += "?next=" + quote(here, safe="")
    return Redirect(path=target, status_code=303, headers=SECURITY_HEADERS)


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The dashboard's exception handler: errors as the flash or a page, never problem+json."""
    if isinstance(exc, Unauthenticated | Forbidden):
        return _to_login(request, 401 if isinstance(exc, Unauthenticated) else 403)
    status, problem, headers = to_problem(request, exc)  # logs unexpected errors once
    detail = str(problem["detail"])
    if problem["code"] == "forbidden":  # only Litestar's own 403 gets here: the CSRF check
        detail = "the form's security token is missing or stale: reload the page and try again"
    if is_htmx(request):
        text = f"{detail} ({problem['code']}, request {problem['request_id']})"
        return page("_flash.html", status_code=status, flash=Flash("error", text),
                    headers={**headers, "HX-Retarget": "#flash", "HX-Reswap": "outerHTML"})
    return page("error.html", status_code=status, headers=headers, status=status, detail=detail,
                code=problem["code"], request_id=problem["request_id"], operator=operator_of(request))
