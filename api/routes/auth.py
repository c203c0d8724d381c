"""Placeholder: routes are being written (registered in api/app.py through `ROUTES`)."""

from __future__ import annotations

from typing import Any

#: Route handlers of this module, registered by api/app.py.
ROUTES: list[Any] = []
