"""Queries of ingestion: the stored document for a source, its chunks, bulk writes, and the
per-source lock that serialises concurrent ingests of one file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.models import Context, ContextRelationship

PART_OF = "part_of"
_DELETE_BATCH = 500


async def lock_sources(session: AsyncSession, dialect: str, owner: str, sources: Sequence[str]) -> None:
    """Serialize with other ingests of these sources before reading what is stored for them."""
    if dialect == "sqlite":
        # A write that changes nothing: BEGIN now, and hold the write lock from here to the commit.
        await session.execute(text("UPDATE contexts SET version = version WHERE 0 = 1"))
        return
    if dialect != "postgresql":
        return
    # One transaction-scoped advisory lock per (owner, source), taken in a fixed order.
    keys = sorted(
        {
            int.from_bytes(hashlib.sha256(f"ingest\x00{owner}\x00{s}".encode()).digest()[:8], "big", signed=True)
            for s in sources
        }
    )
    for key in keys:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


async def insert_contexts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(Context), list(rows))


async def insert_relationships(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(ContextRelationship), list(rows))


async def delete_contexts(session: AsyncSession, ids: Sequence[str]) -> None:
    for start in range(0, len(ids), _DELETE_BATCH):
        batch = list(ids[start : start + _DELETE_BATCH])
        await session.execute(delete(Context).where(Context.id.in_(batch)).execution_options(synchronize_session=False))


async def find_document(session: AsyncSession, owner: str, source: str) -> Context | None:
    """The ingested document for this source: the owner's context with this source that is not a chunk."""
    is_part = exists().where(
        ContextRelationship.source_id == Context.id, ContextRelationship.relationship_type == PART_OF
    )
    rows = await session.scalars(
        select(Context)
        .where(Context.owner_id == owner, Context.source == source, ~is_part)
        .order_by(Context.created_at, Context.id)
    )
    for row in rows:
        if isinstance(row.meta, dict) and "sha256" in row.meta:
            return row
    return None


async def chunk_ids(session: AsyncSession, owner: str, document_id: str, source: str) -> list[str]:
    """The document's chunks: contexts of the same owner and source that are part_of it."""
    rows = await session.scalars(
        select(Context.id)
        .join(ContextRelationship, ContextRelationship.source_id == Context.id)
        .where(
            ContextRelationship.target_id == document_id,
            ContextRelationship.relationship_type == PART_OF,
            Context.owner_id == owner,
            Context.source == source,
        )
        .order_by(Context.id)
    )
    return list(rows)
