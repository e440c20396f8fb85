"""Queries of search: fetching a search's hits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.models import Context


async def owned_contexts(session: AsyncSession, owner_id: str, ids: Sequence[str]) -> dict[str, Context]:
    # By primary key only, the owner checked here: with ``owner_id = ?`` in the WHERE clause, SQLite
    # (no ANALYZE statistics) walked the owner's index over every context the owner has, 40 ms at
    # 100,000, instead of looking up ten keys.
    rows = await session.execute(_CONTEXTS_BY_ID, {"ids": list(ids)})
    return {row.id: row for row in rows.scalars() if row.owner_id == owner_id}


# Built once, like PgVectorIndex's statement: a search's hits are fetched on every search.
_CONTEXTS_BY_ID = select(Context).where(Context.id.in_(bindparam("ids", expanding=True)))
