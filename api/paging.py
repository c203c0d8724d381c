"""Cursor pagination, one way for every list: fetch one row more than the page to learn `has_more`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")
C = TypeVar("C")


class Page(msgspec.Struct, Generic[T, C], frozen=True, kw_only=True):
    """A page of a list, newest first; pass `next_cursor` as `cursor` to get the next page."""

    data: list[T]
    has_more: bool
    next_cursor: C | None
    object: str = "list"


def one_more(limit: int) -> int:
    """How many rows to fetch for a page of `limit`."""
    return limit + 1


P = TypeVar("P", bound=Page)


def page(into: type[P], rows: list[T], limit: int, cursor_of: Callable[[T], C]) -> P:
    """The page of `limit` items out of `one_more(limit)` fetched rows, with the next page's cursor.

    `into` is the list's named subclass (`class JobList(Page[JobView, str])`), so the OpenAPI
    schema is called `JobList` rather than a generated `Page_JobView_str_`.
    """
    items = rows[:limit]
    has_more = len(rows) > limit
    return into(data=items, has_more=has_more, next_cursor=cursor_of(items[-1]) if has_more else None)
