"""HTTP routes, one module per resource; each module lists its handlers in `ROUTES`.

`route_handlers()` collects every module's `ROUTES`, so a new resource is a
new module here and nothing else. Route modules never import each other:
what several need lives in an `api/` module named for what it does.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any


def route_modules() -> list[ModuleType]:
    """Every route module of this package, by name."""
    return [importlib.import_module(f"{__name__}.{info.name}") for info in sorted(
        pkgutil.iter_modules(__path__), key=lambda info: info.name)]


def route_handlers() -> list[Any]:
    """The handlers of every route module."""
    return [handler for module in route_modules() for handler in module.ROUTES]
