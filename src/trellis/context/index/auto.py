"""Choosing the vector index a database supports: ``detect_vector_index`` and ``AutoVectorIndex``,
which decides on first use (after migrations have run)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import text

from trellis.context.index.base import DEFAULT_EF_SEARCH, NO_FILTER, VectorEntry, VectorFilter, VectorHit, VectorIndex
from trellis.context.index.exact import ExactVectorIndex
from trellis.context.index.pgvector import PgVectorIndex
from trellis.kit.vector_math import FloatArray
from trellis.storage.database import Database


async def detect_vector_index(
    database: Database, *, exact: ExactVectorIndex | None = None, ef_search: int = DEFAULT_EF_SEARCH
) -> VectorIndex | None:
    """The index this database supports, or None when its schema is not there yet (not migrated)."""
    exact = exact or ExactVectorIndex(database)
    if database.dialect != "postgresql":
        return exact
    async with database.session() as session:
        table = (await session.execute(text("SELECT to_regclass('context_embeddings') IS NOT NULL"))).scalar_one()
        if not table:
            return None
        typmod = (
            await session.execute(
                text(
                    "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'context_embeddings'::regclass "
                    "AND attname = 'embedding' AND NOT attisdropped"
                )
            )
        ).scalar_one_or_none()
        if typmod is None:
            return exact
        version = (
            await session.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
        ).scalar_one_or_none()
        definition = (
            await session.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                    "AND indexname = 'ix_context_embeddings_hnsw'"
                )
            )
        ).scalar_one_or_none()
    return PgVectorIndex(
        database,
        dimensions=int(typmod),
        extension_version=version,
        ef_search=ef_search,
        exact=exact,
        halfvec="halfvec" in (definition or ""),
    )


class AutoVectorIndex:
    """Chooses the index on first use (after migrations have run), then delegates to it."""

    def __init__(self, database: Database, *, ef_search: int = DEFAULT_EF_SEARCH) -> None:
        self._database = database
        self._ef_search = ef_search
        self._exact = ExactVectorIndex(database)
        self._chosen: VectorIndex | None = None
        self._lock = asyncio.Lock()

    @property
    def kind(self) -> str:
        return self._chosen.kind if self._chosen is not None else "undecided"

    async def resolve(self) -> VectorIndex:
        if self._chosen is not None:
            return self._chosen
        async with self._lock:
            if self._chosen is None:
                chosen = await detect_vector_index(self._database, exact=self._exact, ef_search=self._ef_search)
                if chosen is None:  # not migrated yet: answer exactly, decide again next time
                    return self._exact
                self._chosen = chosen
            return self._chosen

    async def upsert(self, owner_id: str, model: str, entries: Sequence[VectorEntry]) -> None:
        await (await self.resolve()).upsert(owner_id, model, entries)

    async def delete(self, owner_id: str, context_ids: Sequence[str]) -> None:
        await (await self.resolve()).delete(owner_id, context_ids)

    async def search(
        self, owner_id: str, model: str, query: Sequence[float] | FloatArray, k: int, filters: VectorFilter = NO_FILTER
    ) -> list[VectorHit]:
        return await (await self.resolve()).search(owner_id, model, query, k, filters)

    def invalidate(self, owner_id: str) -> None:
        self._exact.invalidate(owner_id)
