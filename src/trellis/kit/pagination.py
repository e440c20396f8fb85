"""One page of a keyset-paged list (``{items, next_cursor}``), the shape of every list endpoint.

Each domain names its page by subclassing ``Page[ItsItem]`` (``class RunPage(Page[RunOut])``), so
the OpenAPI component keeps a name of its own (``RunPage``, not ``Page_RunOut_``). The cursors
themselves are ``trellis.kit.cursor``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Self, TypeVar

from pydantic import BaseModel, Field

ItemT = TypeVar("ItemT")
RowT = TypeVar("RowT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")

    @classmethod
    def of(cls, rows: Iterable[RowT], next_cursor: str | None, each: Callable[[RowT], ItemT]) -> Self:
        """The page of ``rows``, each shaped by ``each`` (an ``Out.of``)."""
        return cls(items=[each(row) for row in rows], next_cursor=next_cursor)
