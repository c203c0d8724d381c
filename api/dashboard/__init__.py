"""The operator dashboard at `/admin`: server-rendered pages (Jinja) with htmx, served by the API itself.

    api/routes/dashboard.py    the pages and actions (`/admin/...`), the static files (`/admin/static/...`)
    api/dashboard/session.py   the signed session cookie and the guard that admits admins only
    api/dashboard/login.py     the login check: lockout, password, role; audited
    api/dashboard/pages.py     rendering: htmx partials, flashes, errors as pages
    api/dashboard/templates/   one base layout, a page per resource, `_*.html` partials
    api/dashboard/static/      htmx and its SSE extension (vendored: no CDN, no build step), one CSS file

Every action goes through `api/operators.py`, which writes its audit row. Form
posts under `/admin` carry a CSRF token (double-submit cookie, Litestar's
`CSRFConfig`); the JSON API under `/v1` authenticates with bearer tokens, which
a browser never sends on its own, so it is left out of the check.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar.config.csrf import CSRFConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from jobs.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

#: Every path the dashboard owns starts with this; its cookies are scoped to it.
PREFIX = "/admin"
CSRF_COOKIE = "sy_admin_csrf"
CSRF_HEADER = "x-csrftoken"
#: Skip the CSRF check everywhere but `/admin` and `/admin/...` (Litestar bypasses a path this finds a match in).
#: The trailing `.` keeps `/` itself checked, so Litestar does not warn that the pattern matches every path.
CSRF_EXCLUDE = r"^/(?!admin(?:/|$))."


def csrf_config(settings: Settings) -> CSRFConfig:
    """Double-submit-cookie CSRF protection for the dashboard's form posts only."""
    # A key of its own, derived from the JWT secret: a CSRF token is never a valid signature of anything else.
    secret = hmac.new(settings.jwt_secret.encode(), b"switchyard dashboard csrf", hashlib.sha256).hexdigest()
    return CSRFConfig(secret=secret, cookie_name=CSRF_COOKIE, cookie_path=PREFIX, header_name=CSRF_HEADER,
                      cookie_httponly=True, cookie_samesite="strict", cookie_secure=settings.secure_cookies,
                      exclude=CSRF_EXCLUDE)


def _age(seconds: float | None) -> str:
    """`4.2 s`, `3 min`, `2.5 h`; an em dash for nothing."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(value: datetime | str | float | None) -> str:
    """A timestamp (a datetime, ISO 8601 text or seconds since the epoch) to the second, in UTC."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    """Indented JSON for a `<pre>`."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _register(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(age=_age, when=_when, pretty=_pretty)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The Jinja engine over the dashboard's templates, with its filters."""
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_register)
