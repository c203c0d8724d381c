"""Placeholder: billing job handlers are being written (merged into workers/execute.HANDLERS)."""

from __future__ import annotations

from typing import Any

#: Handlers of billing job kinds, by kind.
BILLING_HANDLERS: dict[str, Any] = {}
