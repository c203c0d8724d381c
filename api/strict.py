"""Strict request types from tolerant job types.

Job input types live in `jobs/kinds.py` and are tolerant (an old worker must
skip a newer field). Requests are decoded with `strict()` variants of the
same types, so an unknown field is a 400 naming the field, without writing
every type twice.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Annotated, Any, Union

import msgspec


@cache
def strict(tp: Any) -> Any:
    """The same type, with every Struct in it forbidding unknown fields."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        fields: list[tuple[str, Any, Any]] = []
        for f in msgspec.structs.fields(tp):
            if f.default is not msgspec.NODEFAULT:
                default = f.default
            elif f.default_factory is not msgspec.NODEFAULT:
                default = msgspec.field(default_factory=f.default_factory)
            else:
                fields.append((f.name, strict(f.type)))  # type: ignore[arg-type]
                continue
            fields.append((f.name, strict(f.type), default))
        cfg = tp.__struct_config__
        new = msgspec.defstruct(
            tp.__name__, fields, bases=(tp,), kw_only=True, frozen=cfg.frozen, forbid_unknown_fields=True,
            tag_field=cfg.tag_field, tag=cfg.tag, module=tp.__module__,
        )
        new.__doc__ = tp.__doc__
        return new
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return Annotated[(strict(args[0]), *tp.__metadata__)]
    if origin in (Union, types.UnionType):
        return Union[tuple(strict(a) for a in args)]  # noqa: UP007
    if origin in (list, dict, tuple, set, frozenset):
        return origin[tuple(strict(a) for a in args)]
    return tp
