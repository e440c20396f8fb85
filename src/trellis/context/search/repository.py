"""Queries of search: fetching a search's hits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.models import Context, ContextRelationship

PART_OF = "part_of"


class Label(NamedTuple):
    """What a search needs to know of a context to group and explain it, without its content."""

    source: str | None
    meta: dict[str, Any]


async def labels(session: AsyncSession, owner_id: str, ids: Sequence[str]) -> dict[str, Label]:
    rows = await session.execute(_LABELS_BY_ID, {"ids": list(ids)})
    return {row.id: Label(row.source, dict(row.meta or {})) for row in rows if row.owner_id == owner_id}


async def documents_of(session: AsyncSession, ids: Sequence[str]) -> dict[str, str]:
    """chunk id -> the id of the document it is ``part_of``."""
    rows = await session.execute(_PARTS_BY_ID, {"ids": list(ids)})
    return {row.source_id: row.target_id for row in rows}


async def owned_contexts(session: AsyncSession, owner_id: str, ids: Sequence[str]) -> dict[str, Context]:
    # By primary key only, the owner checked here: with ``owner_id = ?`` in the WHERE clause, SQLite
    # (no ANALYZE statistics) walked the owner's index over every context the owner has, 40 ms at
    # 100,000, instead of looking up ten keys.
    rows = await session.execute(_CONTEXTS_BY_ID, {"ids": list(ids)})
    return {row.id: row for row in rows.scalars() if row.owner_id == owner_id}


# Built once, like PgVectorIndex's statement: a search's hits are fetched on every search.
_CONTEXTS_BY_ID = select(Context).where(Context.id.in_(bindparam("ids", expanding=True)))
_LABELS_BY_ID = select(Context.id, Context.owner_id, Context.source, Context.meta).where(
    Context.id.in_(bindparam("ids", expanding=True))
)
_PARTS_BY_ID = select(ContextRelationship.source_id, ContextRelationship.target_id).where(
    ContextRelationship.source_id.in_(bindparam("ids", expanding=True)),
    ContextRelationship.relationship_type == PART_OF,
)
