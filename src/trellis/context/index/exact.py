"""``ExactVectorIndex``: exact cosine top-k with numpy over an owner's cached matrix (SQLite, and
PostgreSQL without pgvector). See the package docstring for how it stays correct across processes."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.index.base import NO_FILTER, DimensionMismatch, VectorEntry, VectorFilter, VectorHit
from trellis.context.index.models import ContextEmbedding
from trellis.context.index.repository import delete_rows, filtered_ids, upsert_rows
from trellis.kit.logging import get_logger
from trellis.kit.vector_math import FloatArray, as_vector, normalized, top_k, unit_rows
from trellis.storage.database import Database

log = get_logger(__name__)

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class OwnerMatrix:
    marker: str
    ids: list[str]
    rows: dict[str, int]
    matrix: FloatArray  # (n, d), rows L2-normalised

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes) + 100 * len(self.ids)


class ExactVectorIndex:
    kind = "exact"

    def __init__(self, database: Database, *, max_cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._database = database
        self._max_cache_bytes = max_cache_bytes
        self._cache: OrderedDict[tuple[str, str], OwnerMatrix] = OrderedDict()
        self._cached_bytes = 0
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # How many times a matrix was (re)loaded from the database: a diagnostic for tests.
        self.loads = 0

    # --- writes ---

    async def upsert(self, owner_id: str, model: str, entries: Sequence[VectorEntry]) -> None:
        await upsert_rows(self._database, owner_id, model, entries)
        self.invalidate(owner_id)

    async def delete(self, owner_id: str, context_ids: Sequence[str]) -> None:
        await delete_rows(self._database, owner_id, context_ids)
        self.invalidate(owner_id)

    def invalidate(self, owner_id: str) -> None:
        for key in [key for key in self._cache if key[0] == owner_id]:
            self._drop(key)

    # --- search ---

    async def search(
        self, owner_id: str, model: str, query: Sequence[float] | FloatArray, k: int, filters: VectorFilter = NO_FILTER
    ) -> list[VectorHit]:
        wanted = normalized(as_vector(query))
        if k <= 0:
            return []
        async with self._database.reader() as session:
            matrix = await self._matrix(session, owner_id, model)
            allowed: list[str] | None = None
            if filters.active:
                result = await session.execute(filtered_ids(self._database.dialect, owner_id, filters))
                allowed = [str(value) for value in result.scalars()]
        # Scoring 100,000 vectors takes milliseconds: in a worker thread (numpy lets go of the GIL), the
        # event loop serves other requests meanwhile, and concurrent searches score in parallel.
        return await asyncio.to_thread(self._score, matrix, wanted, k, allowed)

    def _score(self, matrix: OwnerMatrix, wanted: FloatArray, k: int, allowed: list[str] | None) -> list[VectorHit]:
        if not matrix.ids:
            return []
        if matrix.matrix.shape[1] != wanted.shape[0]:
            raise DimensionMismatch(
                f"the query has {wanted.shape[0]} dimensions, the stored vectors {matrix.matrix.shape[1]}"
            )
        scores = matrix.matrix @ wanted
        if allowed is None:
            return [VectorHit(matrix.ids[i], float(scores[i])) for i in top_k(scores, k)]
        rows = np.fromiter((matrix.rows[i] for i in allowed if i in matrix.rows), dtype=np.intp)
        if rows.size == 0:
            return []
        rows.sort()
        picked = scores[rows]
        return [VectorHit(matrix.ids[rows[i]], float(picked[i])) for i in top_k(picked, k)]

    async def _matrix(self, session: AsyncSession, owner_id: str, model: str) -> OwnerMatrix:
        key = (owner_id, model)
        marker = await self.marker(session, owner_id, model)
        cached = self._cache.get(key)
        if cached is not None and cached.marker == marker:
            self._cache.move_to_end(key)
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is not None and cached.marker == marker:
                return cached
            # Read after the marker: if a write lands in between, the matrix is newer than its
            # marker, and the next search reloads. A matrix older than its marker cannot happen.
            loaded = await self.load_matrix(session, owner_id, model, marker)
            self._store(key, loaded)
            return loaded

    async def marker(self, session: AsyncSession, owner_id: str, model: str) -> str:
        """The owner's vector epoch (migration 0004): it changes whenever any of their vectors do."""
        epoch = (
            await session.execute(
                text("SELECT epoch FROM context_vector_epochs WHERE owner_id = :owner_id"), {"owner_id": owner_id}
            )
        ).scalar_one_or_none()
        return str(epoch or 0)

    async def load_matrix(self, session: AsyncSession, owner_id: str, model: str, marker: str) -> OwnerMatrix:
        self.loads += 1
        result = await session.execute(
            select(ContextEmbedding.context_id, ContextEmbedding.vector)
            .where(ContextEmbedding.owner_id == owner_id, ContextEmbedding.model == model)
            .order_by(ContextEmbedding.context_id)
        )
        ids: list[str] = []
        blobs: list[bytes] = []
        width: int | None = None
        for context_id, blob in result:
            if width is None:
                width = len(blob)
            if len(blob) != width or width % 4:
                log.warning("vector_skipped", context_id=context_id, reason="length differs from the model's")
                continue
            ids.append(context_id)
            blobs.append(blob)
        if not ids or width is None:
            return OwnerMatrix(marker, [], {}, np.zeros((0, 0), dtype=np.float32))
        matrix = unit_rows(b"".join(blobs), len(ids), width // 4)
        return OwnerMatrix(marker, ids, {context_id: row for row, context_id in enumerate(ids)}, matrix)

    def _store(self, key: tuple[str, str], matrix: OwnerMatrix) -> None:
        self._drop(key)
        if matrix.nbytes > self._max_cache_bytes:
            return
        self._cache[key] = matrix
        self._cached_bytes += matrix.nbytes
        while self._cached_bytes > self._max_cache_bytes and self._cache:
            self._drop(next(iter(self._cache)))

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.nbytes
