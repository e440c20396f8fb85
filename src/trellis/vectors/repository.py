"""Queries of the vector collections: collections by owner and name, item upserts, candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.storage.metadata_filter import MetadataFilter, metadata_clause
from trellis.vectors.models import VectorCollection, VectorItem


async def owned_collection(session: AsyncSession, owner_id: str, name: str) -> VectorCollection | None:
    statement = select(VectorCollection).where(VectorCollection.owner_id == owner_id, VectorCollection.name == name)
    return (await session.execute(statement)).scalar_one_or_none()


async def count_items(session: AsyncSession, collection_id: str) -> int:
    count = await session.execute(
        select(func.count()).select_from(VectorItem).where(VectorItem.collection_id == collection_id)
    )
    return int(count.scalar_one())


async def collections_with_counts(session: AsyncSession, owner_id: str) -> list[tuple[VectorCollection, int]]:
    counts = select(VectorItem.collection_id, func.count().label("n")).group_by(VectorItem.collection_id).subquery()
    rows = await session.execute(
        select(VectorCollection, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.collection_id == VectorCollection.id)
        .where(VectorCollection.owner_id == owner_id)
        .order_by(VectorCollection.name)
    )
    return [(collection, int(count)) for collection, count in rows]


async def delete_collection(session: AsyncSession, collection_id: str) -> None:
    # Items first: not every deployment enforces the foreign key's cascade the same way.
    await session.execute(delete(VectorItem).where(VectorItem.collection_id == collection_id))
    await session.execute(delete(VectorCollection).where(VectorCollection.id == collection_id))


async def upsert_items(session: AsyncSession, dialect: str, rows: Sequence[dict[str, Any]]) -> None:
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    statement = insert(VectorItem.__table__)  # type: ignore[arg-type]
    statement = statement.on_conflict_do_update(
        index_elements=["collection_id", "item_id"],
        set_={
            "vector": statement.excluded.vector,
            "metadata": statement.excluded.metadata,
            "text": statement.excluded.text,
            "updated_at": statement.excluded.updated_at,
        },
    )
    await session.execute(statement, list(rows))


async def delete_items(session: AsyncSession, collection_id: str, item_ids: Sequence[str]) -> int:
    result = await session.execute(
        delete(VectorItem).where(VectorItem.collection_id == collection_id, VectorItem.item_id.in_(list(item_ids)))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def candidate_vectors(
    session: AsyncSession, dialect: str, collection_id: str, filters: MetadataFilter
) -> list[tuple[str, bytes]]:
    """(item id, vector blob) of the collection's items that pass the metadata filter."""
    statement = select(VectorItem.item_id, VectorItem.vector).where(VectorItem.collection_id == collection_id)
    clause = metadata_clause(dialect, VectorItem.meta, filters)
    if clause is not None:
        statement = statement.where(clause)
    return [(item_id, blob) for item_id, blob in (await session.execute(statement)).all()]


async def items_by_ids(session: AsyncSession, collection_id: str, item_ids: Sequence[str]) -> dict[str, VectorItem]:
    rows = await session.execute(
        select(VectorItem).where(VectorItem.collection_id == collection_id, VectorItem.item_id.in_(list(item_ids)))
    )
    return {row.item_id: row for row in rows.scalars()}
