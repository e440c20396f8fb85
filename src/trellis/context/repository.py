"""Queries for contexts and their relationships. Functions take the session the service opened."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.models import Context, ContextRelationship
from trellis.context.schemas import ContextListQuery
from trellis.storage.metadata_filter import metadata_clause


def content_hash(content: str) -> str:
    """SHA-256 of the UTF-8 content, hex: what embeddings are checked against to know they are current."""
    return hashlib.sha256(content.encode()).hexdigest()


async def context_by_id(session: AsyncSession, context_id: str) -> Context | None:
    return await session.get(Context, context_id, populate_existing=True)


async def contexts_by_ids(session: AsyncSession, owner_id: str | None, ids: Collection[str]) -> dict[str, Context]:
    """The owner's contexts among these ids (others' and missing ones are simply absent);
    ``owner_id=None``: any owner's (an administrator's read)."""
    if not ids:
        return {}
    statement = select(Context).where(Context.id.in_(list(ids)))
    if owner_id is not None:
        statement = statement.where(Context.owner_id == owner_id)
    rows = await session.execute(statement)
    return {row.id: row for row in rows.scalars()}


async def update_if_version(
    session: AsyncSession, context_id: str, owner_id: str, version: int, values: dict[Any, Any]
) -> bool:
    """Compare-and-set: write ``values`` and bump the version only if it is still ``version``.

    One statement, so of two writers holding the same version exactly one succeeds (PostgreSQL
    re-checks the condition after the row lock; SQLite serialises writers on the database lock).
    """
    statement = (
        update(Context)
        .where(Context.id == context_id, Context.owner_id == owner_id, Context.version == version)
        .values({**values, Context.version: Context.version + 1})
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], await session.execute(statement))
    return result.rowcount == 1


async def delete_context(session: AsyncSession, context_id: str, owner_id: str, version: int | None) -> bool:
    """Delete (its relationships and embedding cascade); with ``version``, only if still at it."""
    statement = delete(Context).where(Context.id == context_id, Context.owner_id == owner_id)
    if version is not None:
        statement = statement.where(Context.version == version)
    result = cast(CursorResult[Any], await session.execute(statement.execution_options(synchronize_session=False)))
    return result.rowcount == 1


async def count_relationships_of(session: AsyncSession, context_id: str) -> int:
    statement = (
        select(func.count())
        .select_from(ContextRelationship)
        .where(or_(ContextRelationship.source_id == context_id, ContextRelationship.target_id == context_id))
    )
    return (await session.execute(statement)).scalar_one()


async def relationship_by_id(session: AsyncSession, relationship_id: str) -> ContextRelationship | None:
    return await session.get(ContextRelationship, relationship_id)


async def find_relationship(
    session: AsyncSession, source_id: str, target_id: str, relationship_type: str
) -> ContextRelationship | None:
    statement = select(ContextRelationship).where(
        ContextRelationship.source_id == source_id,
        ContextRelationship.target_id == target_id,
        ContextRelationship.relationship_type == relationship_type,
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def relationships_touching(
    session: AsyncSession,
    owner_id: str | None,
    context_ids: Collection[str],
    *,
    relationship_type: str | None = None,
    outgoing: bool = True,
    incoming: bool = True,
) -> list[ContextRelationship]:
    """Relationships with one end among ``context_ids``, oldest first: one query for any number of ids
    (the owner's; ``owner_id=None``: any owner's)."""
    ids = list(context_ids)
    ends = []
    if outgoing:
        ends.append(ContextRelationship.source_id.in_(ids))
    if incoming:
        ends.append(ContextRelationship.target_id.in_(ids))
    if not ids or not ends:
        return []
    statement = select(ContextRelationship).where(or_(*ends))
    if owner_id is not None:
        statement = statement.where(ContextRelationship.owner_id == owner_id)
    if relationship_type is not None:
        statement = statement.where(ContextRelationship.relationship_type == relationship_type)
    statement = statement.order_by(ContextRelationship.created_at, ContextRelationship.id)
    return list((await session.execute(statement)).scalars())


async def delete_relationship(session: AsyncSession, relationship_id: str, owner_id: str) -> bool:
    statement = delete(ContextRelationship).where(
        ContextRelationship.id == relationship_id, ContextRelationship.owner_id == owner_id
    )
    result = cast(CursorResult[Any], await session.execute(statement.execution_options(synchronize_session=False)))
    return result.rowcount == 1


async def list_page(
    session: AsyncSession,
    dialect: str,
    owner_id: str | None,
    query: ContextListQuery,
    after: tuple[datetime, str] | None,
) -> list[Context]:
    """One page of the owner's contexts (``owner_id=None``: everyone's) in ``query.sort`` order (ties
    by id), after the keyset ``after``."""
    column = Context.created_at if query.sort.column == "created_at" else Context.updated_at
    statement = select(Context)
    if owner_id is not None:
        statement = statement.where(Context.owner_id == owner_id)
    if query.types:
        statement = statement.where(Context.type.in_(query.types))
    clause = metadata_clause(dialect, Context.meta, query.metadata)
    if clause is not None:
        statement = statement.where(clause)
    for bound, operator in (
        (query.created_after, Context.created_at.__ge__),
        (query.created_before, Context.created_at.__lt__),
        (query.updated_after, Context.updated_at.__ge__),
        (query.updated_before, Context.updated_at.__lt__),
    ):
        if bound is not None:
            statement = statement.where(operator(bound))
    if after is not None:
        moment, context_id = after
        if query.sort.descending:
            statement = statement.where(or_(column < moment, and_(column == moment, Context.id < context_id)))
        else:
            statement = statement.where(or_(column > moment, and_(column == moment, Context.id > context_id)))
    if query.sort.descending:
        statement = statement.order_by(column.desc(), Context.id.desc())
    else:
        statement = statement.order_by(column.asc(), Context.id.asc())
    return list((await session.execute(statement.limit(query.limit))).scalars())
