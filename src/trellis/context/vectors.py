"""The vector index behind semantic search: one small protocol, two implementations.

Every vector is stored portably in ``context_embeddings.vector`` (float32, little-endian), one row
per context, tagged with the embedding model and the ``content_hash`` of the content it was
computed from. Where the vectors are searched depends on the database:

``ExactVectorIndex`` (SQLite, and PostgreSQL without pgvector)
    Exact cosine top-k with numpy. An owner's vectors for one model are loaded into one normalised
    float32 matrix and cached in memory (LRU, bounded in bytes); scoring 100,000 vectors of 384
    dimensions is one matrix-vector product, about 4 ms. Correct across processes: before each
    search the owner's *vector epoch* is read (``context_vector_epochs``, one row), a counter that
    database triggers bump on every insert, update or delete of the owner's vectors — including
    cascades no code of ours sees and writes by other processes (the CLI, other replicas) — and the
    matrix is reloaded when it differs. Writes through this index drop the owner's matrix at once.
    Filters (types, metadata) run in SQL first; the surviving ids pick rows of the scores.

``PgVectorIndex`` (PostgreSQL with the ``embedding vector(N)`` column migration 0003 adds when
pgvector is available)
    Writes the ``embedding`` column too and asks ``ORDER BY embedding <=> :q LIMIT k``, so the HNSW
    index answers, with ``hnsw.ef_search`` raised on the connection (once per pooled connection).
    With pgvector >= 0.7 the graph holds half-precision copies (migration 0006: an index on
    ``embedding::halfvec(N)``): the walk orders by the half-precision distance, which is what the
    index can serve, and the rows it returns are scored, and sorted, by their float32 vectors.
    HNSW applies WHERE clauses *after* the graph walk: the walk yields ``ef_search`` candidates
    across all owners, the owner and filter predicates drop most of them, and the query can return
    fewer than ``k`` rows although more match. On pgvector >= 0.8 the walk continues
    (``hnsw.iterative_scan = relaxed_order``); on older versions it does not.
    Either way, when fewer than ``k`` rows come back the query is repeated exactly — the same
    predicates, ordered by an expression the index cannot serve — which is cheap precisely because
    it happens when few rows match. A query whose dimensions differ from the column's (another
    embedding model) is answered by the exact index.

``AutoVectorIndex`` picks one on first use: ``PgVectorIndex`` when the ``embedding`` column exists.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import Float, Integer, Select, and_, bindparam, cast, literal_column, select, text
from sqlalchemy.dialects.postgresql import ARRAY, REAL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import UserDefinedType

from trellis.context.filters import MetadataFilter, metadata_clause
from trellis.context.models import Context, ContextEmbedding
from trellis.kit.logging import get_logger
from trellis.storage.database import Database

log = get_logger(__name__)

FloatArray = npt.NDArray[np.float32]
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
DEFAULT_EF_SEARCH = 200


class DimensionMismatch(ValueError):
    """A query vector whose length differs from the stored vectors'."""


@dataclass(frozen=True, slots=True)
class VectorEntry:
    """A context's vector, computed from the content whose hash is ``content_hash``."""

    context_id: str
    content_hash: str
    vector: Sequence[float] | FloatArray


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """Only contexts of one of ``types`` (when given) whose metadata matches ``metadata``."""

    types: tuple[str, ...] = ()
    metadata: MetadataFilter = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.types or self.metadata)


NO_FILTER = VectorFilter()


@dataclass(frozen=True, slots=True)
class VectorHit:
    context_id: str
    score: float  # cosine similarity, -1..1


class VectorIndex(Protocol):
    @property
    def kind(self) -> str:
        """``exact`` or ``pgvector``."""
        ...

    async def upsert(self, owner_id: str, model: str, entries: Sequence[VectorEntry]) -> None:
        """Store vectors. An entry whose context is gone, belongs to someone else, or whose content
        has changed since (``content_hash`` differs) is skipped: a stale vector is never stored."""
        ...

    async def delete(self, owner_id: str, context_ids: Sequence[str]) -> None:
        """Remove these contexts' vectors (deleting a context cascades to its vector anyway)."""
        ...

    async def search(
        self, owner_id: str, model: str, query: Sequence[float] | FloatArray, k: int, filters: VectorFilter = NO_FILTER
    ) -> list[VectorHit]:
        """The owner's ``k`` contexts nearest to ``query`` (vectors of ``model`` only), best first."""
        ...

    def invalidate(self, owner_id: str) -> None:
        """Drop anything this process caches for the owner."""
        ...


# --- shared pieces ------------------------------------------------------------------------------


def as_vector(values: Sequence[float] | FloatArray) -> FloatArray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("a vector is a non-empty list of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError("a vector's numbers must be finite")
    return array


def to_blob(vector: FloatArray) -> bytes:
    return vector.astype("<f4", copy=False).tobytes()


def from_blob(blob: bytes) -> FloatArray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=False)


def unit_rows(blobs: bytes, rows: int, dimensions: int) -> FloatArray:
    """``rows`` float32 vectors packed back to back in ``blobs``, as a matrix of unit-length rows
    (a zero vector stays zero)."""
    matrix = np.frombuffer(blobs, dtype="<f4").astype(np.float32).reshape(rows, dimensions)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms > 0, norms, 1.0)
    return matrix


def normalized(vector: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def top_k(scores: FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores, highest first (ties: lower index first)."""
    if k >= scores.shape[0]:
        order = np.argsort(-scores, kind="stable")
        return order[:k]
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


_UPSERT = """
INSERT INTO context_embeddings (context_id, owner_id, model, dimensions, vector, content_hash{extra_columns})
SELECT id, owner_id, :model, :dimensions, :vector, content_hash{extra_values}
FROM contexts WHERE id = :context_id AND owner_id = :owner_id AND content_hash = :content_hash
ON CONFLICT (context_id) DO UPDATE SET
  model = excluded.model, dimensions = excluded.dimensions, vector = excluded.vector,
  content_hash = excluded.content_hash{extra_updates}
"""

_PG_UPSERT = """
INSERT INTO context_embeddings (context_id, owner_id, model, dimensions, vector, content_hash{extra_columns})
SELECT c.id, c.owner_id, :model, v.dimensions, v.vector, c.content_hash{extra_values}
FROM unnest(
  CAST(:ids AS text[]), CAST(:hashes AS text[]), CAST(:dimensions AS integer[]), CAST(:vectors AS bytea[]){extra_arrays}
) AS v(context_id, content_hash, dimensions, vector{extra_names})
JOIN contexts c ON c.id = v.context_id AND c.owner_id = :owner_id AND c.content_hash = v.content_hash
ORDER BY c.id
ON CONFLICT (context_id) DO UPDATE SET
  model = excluded.model, dimensions = excluded.dimensions, vector = excluded.vector,
  content_hash = excluded.content_hash{extra_updates}
"""


def _filtered_ids(dialect: str, owner_id: str, filters: VectorFilter) -> Select[Any]:
    query = select(Context.id).where(Context.owner_id == owner_id)
    if filters.types:
        query = query.where(Context.type.in_(filters.types))
    clause = metadata_clause(dialect, Context.meta, filters.metadata)
    if clause is not None:
        query = query.where(clause)
    return query


async def _delete_rows(database: Database, owner_id: str, context_ids: Sequence[str]) -> None:
    if not context_ids:
        return
    async with database.transaction() as session:
        await session.execute(
            ContextEmbedding.__table__.delete().where(  # type: ignore[attr-defined]
                and_(ContextEmbedding.owner_id == owner_id, ContextEmbedding.context_id.in_(list(context_ids)))
            )
        )


# --- exact -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Matrix:
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
        self._cache: OrderedDict[tuple[str, str], _Matrix] = OrderedDict()
        self._cached_bytes = 0
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # How many times a matrix was (re)loaded from the database: a diagnostic for tests.
        self.loads = 0

    # --- writes ---

    async def upsert(self, owner_id: str, model: str, entries: Sequence[VectorEntry]) -> None:
        await upsert_rows(self._database, owner_id, model, entries)
        self.invalidate(owner_id)

    async def delete(self, owner_id: str, context_ids: Sequence[str]) -> None:
        await _delete_rows(self._database, owner_id, context_ids)
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
                result = await session.execute(_filtered_ids(self._database.dialect, owner_id, filters))
                allowed = [str(value) for value in result.scalars()]
        # Scoring 100,000 vectors takes milliseconds: in a worker thread (numpy lets go of the GIL), the
        # event loop serves other requests meanwhile, and concurrent searches score in parallel.
        return await asyncio.to_thread(self._score, matrix, wanted, k, allowed)

    def _score(self, matrix: _Matrix, wanted: FloatArray, k: int, allowed: list[str] | None) -> list[VectorHit]:
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

    async def _matrix(self, session: AsyncSession, owner_id: str, model: str) -> _Matrix:
        key = (owner_id, model)
        marker = await self._marker(session, owner_id, model)
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
            loaded = await self._load(session, owner_id, model, marker)
            self._store(key, loaded)
            return loaded

    async def _marker(self, session: AsyncSession, owner_id: str, model: str) -> str:
        """The owner's vector epoch (migration 0004): it changes whenever any of their vectors do."""
        epoch = (
            await session.execute(
                text("SELECT epoch FROM context_vector_epochs WHERE owner_id = :owner_id"), {"owner_id": owner_id}
            )
        ).scalar_one_or_none()
        return str(epoch or 0)

    async def _load(self, session: AsyncSession, owner_id: str, model: str, marker: str) -> _Matrix:
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
            return _Matrix(marker, [], {}, np.zeros((0, 0), dtype=np.float32))
        matrix = unit_rows(b"".join(blobs), len(ids), width // 4)
        return _Matrix(marker, ids, {context_id: row for row, context_id in enumerate(ids)}, matrix)

    def _store(self, key: tuple[str, str], matrix: _Matrix) -> None:
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


async def upsert_rows(
    database: Database,
    owner_id: str,
    model: str,
    entries: Sequence[VectorEntry],
    *,
    pg_dimensions: int | None = None,
) -> None:
    """Write vectors to ``context_embeddings`` (and to ``embedding`` when ``pg_dimensions`` is set).

    On PostgreSQL the batch is ONE statement over arrays, rows in ``context_id`` order: its row
    locks are taken in a stable order and the vector-epoch trigger (migration 0004) runs once, after
    them. Sent row by row (an executemany), each row's statement would take the owner's epoch lock
    and then further row locks while holding it, and two overlapping batches could deadlock."""
    if not entries:
        return
    latest: dict[str, VectorEntry] = {entry.context_id: entry for entry in entries}  # the last one wins
    vectors = {context_id: as_vector(entry.vector) for context_id, entry in latest.items()}
    if database.dialect != "postgresql":
        rows: list[dict[str, Any]] = [
            {
                "context_id": context_id,
                "owner_id": owner_id,
                "content_hash": latest[context_id].content_hash,
                "model": model,
                "dimensions": int(vector.shape[0]),
                "vector": to_blob(vector),
            }
            for context_id, vector in vectors.items()
        ]
        async with database.transaction() as session:
            await session.execute(text(_UPSERT.format(extra_columns="", extra_values="", extra_updates="")), rows)
        return
    ordered = sorted(vectors)
    parameters: dict[str, Any] = {
        "owner_id": owner_id,
        "model": model,
        "ids": ordered,
        "hashes": [latest[context_id].content_hash for context_id in ordered],
        "dimensions": [int(vectors[context_id].shape[0]) for context_id in ordered],
        "vectors": [to_blob(vectors[context_id]) for context_id in ordered],
    }
    if pg_dimensions is None:
        sql = _PG_UPSERT.format(extra_arrays="", extra_names="", extra_columns="", extra_values="", extra_updates="")
    else:
        parameters["embeddings"] = [
            _pg_literal(vectors[c]) if vectors[c].shape[0] == pg_dimensions else None for c in ordered
        ]
        sql = _PG_UPSERT.format(
            extra_arrays=", CAST(:embeddings AS text[])",
            extra_names=", embedding",
            extra_columns=", embedding",
            extra_values=", CAST(v.embedding AS vector)",
            extra_updates=", embedding = excluded.embedding",
        )
    async with database.transaction() as session:
        await session.execute(text(sql), parameters)


# --- pgvector --------------------------------------------------------------------------------------


class _Vector(UserDefinedType[str]):
    """pgvector's ``vector`` type, for CAST only (values travel as text or as ``real[]``)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"


class _HalfVec(UserDefinedType[str]):
    """pgvector's ``halfvec(N)`` type, for CAST only: the HNSW index's expression (migration 0006)."""

    cache_ok = True

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    def get_col_spec(self, **kw: Any) -> str:
        return f"halfvec({self.dimensions})"


def _pg_literal(vector: FloatArray) -> str:
    return "[" + ",".join(map(repr, vector.tolist())) + "]"


def _version(text_version: str | None) -> tuple[int, ...]:
    parts: list[int] = []
    for part in (text_version or "0").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


_HNSW_SETTINGS = "trellis.hnsw_settings"  # key in a connection's info: the settings last set on it


class PgVectorIndex:
    kind = "pgvector"

    def __init__(
        self,
        database: Database,
        *,
        dimensions: int,
        extension_version: str | None = None,
        ef_search: int = DEFAULT_EF_SEARCH,
        exact: ExactVectorIndex | None = None,
        halfvec: bool = False,
    ) -> None:
        self._database = database
        self.dimensions = dimensions
        # The HNSW index is over ``embedding::halfvec(N)`` (migration 0006), not the column itself.
        self.halfvec = halfvec
        self.extension_version = extension_version
        self.iterative_scan = _version(extension_version) >= (0, 8)
        self.ef_search = ef_search
        # Answers queries of other dimensions (vectors of a model that does not fit the column).
        self.exact = exact or ExactVectorIndex(database)
        # How many searches fell back to an exact scan (a diagnostic for tests and metrics).
        self.exact_fallbacks = 0
        # exact? -> the unfiltered search statement, built once (see ``_statement``).
        self._unfiltered: dict[bool, Select[Any]] = {}

    async def upsert(self, owner_id: str, model: str, entries: Sequence[VectorEntry]) -> None:
        await upsert_rows(self._database, owner_id, model, entries, pg_dimensions=self.dimensions)
        self.exact.invalidate(owner_id)

    async def delete(self, owner_id: str, context_ids: Sequence[str]) -> None:
        await _delete_rows(self._database, owner_id, context_ids)
        self.exact.invalidate(owner_id)

    def invalidate(self, owner_id: str) -> None:
        self.exact.invalidate(owner_id)

    async def search(
        self, owner_id: str, model: str, query: Sequence[float] | FloatArray, k: int, filters: VectorFilter = NO_FILTER
    ) -> list[VectorHit]:
        wanted = as_vector(query)
        if wanted.shape[0] != self.dimensions:
            return await self.exact.search(owner_id, model, wanted, k, filters)
        if k <= 0:
            return []
        parameters = {"q": wanted.tolist(), "owner_id": owner_id, "model": model, "k": k}
        async with self._database.reader() as session:
            await self._configure(session, max(self.ef_search, k))
            rows = (await session.execute(self._statement(filters, exact=False), parameters)).all()
            if len(rows) < k:
                # The graph walk may have missed matching rows (see the module docstring): ask exactly.
                self.exact_fallbacks += 1
                rows = (await session.execute(self._statement(filters, exact=True), parameters)).all()
        hits = [VectorHit(context_id, 1.0 - float(distance)) for context_id, distance in rows]
        # relaxed_order may return slightly unsorted rows, and a halfvec walk orders by rounded distances.
        hits.sort(key=lambda hit: (-hit.score, hit.context_id))
        return hits

    async def _configure(self, session: AsyncSession, ef_search: int) -> None:
        """Set the walk's parameters on the session's connection, once per connection and value.

        They are set for the connection's whole life (``set_config(..., false)``; reads run in
        autocommit, so nothing rolls them back) and remembered in its ``info``, which SQLAlchemy
        keeps while the connection is pooled and clears when it is replaced: a search sends no
        extra statement unless it asks for a deeper walk than the last one on that connection.
        Only HNSW scans read these settings, and every one of ours sets them first."""
        connection = await session.connection()
        wanted = (ef_search, self.iterative_scan)
        previous = connection.info.get(_HNSW_SETTINGS)
        if previous == wanted:
            return
        await session.execute(text("SELECT set_config('hnsw.ef_search', :value, false)"), {"value": str(ef_search)})
        # Before pgvector 0.8 there is no such setting (setting it is an error): set it only where it
        # exists, or to switch it back off.
        if self.iterative_scan or (previous is not None and previous[1]):
            mode = "relaxed_order" if self.iterative_scan else "off"
            await session.execute(text("SELECT set_config('hnsw.iterative_scan', :mode, false)"), {"mode": mode})
        connection.info[_HNSW_SETTINGS] = wanted

    def _query(self, owner_id: str, model: str, filters: VectorFilter, k: int, *, exact: bool) -> Select[Any]:
        """The statement a search sends, with everything but the query vector (``q``, a list of
        floats) bound."""
        return self._statement(filters, exact=exact).params(owner_id=owner_id, model=model, k=k)

    def _statement(self, filters: VectorFilter, *, exact: bool) -> Select[Any]:
        """The search statement, with the query vector, owner, model and k as parameters (``q``,
        ``owner_id``, ``model``, ``k``).

        Nearly every search is unfiltered, and its statement is built once: constructing the
        expression tree again for each search was one of the largest Python costs of a search.
        Filtered statements differ by their filters and are built per search."""
        if filters.active:
            return self._build(filters, exact=exact)
        statement = self._unfiltered.get(exact)
        if statement is None:
            statement = self._unfiltered[exact] = self._build(filters, exact=exact)
        return statement

    def _build(self, filters: VectorFilter, *, exact: bool) -> Select[Any]:
        embedding: ColumnElement[Any] = literal_column("context_embeddings.embedding")
        # The query vector travels as a binary float4 array, cast to pgvector's types by the server,
        # not as 8 KB of text formatted here and parsed there.
        wanted: BindParameter[Any] = bindparam("q", type_=ARRAY(REAL()))
        distance: ColumnElement[Any] = embedding.op("<=>", return_type=Float())(cast(wanted, _Vector()))
        order = distance
        if exact:
            # ``+ 0`` turns the ordering into an expression the HNSW index cannot serve: an exact scan.
            order = distance + 0
        elif self.halfvec:
            # The index's own expression, so the planner walks it; ``distance`` stays float32.
            half = _HalfVec(self.dimensions)
            order = cast(embedding, half).op("<=>", return_type=Float())(cast(wanted, half))
        query = (
            select(ContextEmbedding.context_id, distance.label("distance"))
            .where(
                ContextEmbedding.owner_id == bindparam("owner_id"),
                ContextEmbedding.model == bindparam("model"),
                embedding.is_not(None),
            )
            .order_by(order)
            .limit(bindparam("k", type_=Integer()))
        )
        if filters.active:
            query = query.join(Context, Context.id == ContextEmbedding.context_id)
            if filters.types:
                query = query.where(Context.type.in_(filters.types))
            clause = metadata_clause("postgresql", Context.meta, filters.metadata)
            if clause is not None:
                query = query.where(clause)
        return query


def use_one_blas_thread() -> None:
    """Make numpy's BLAS (OpenBLAS in numpy's wheels) compute on the calling thread only, in this process.

    OpenBLAS splits every matrix product over a pool of its own threads, one per core, which then
    spin for a while waiting for more work. A server gains nothing from that: parallelism comes from
    concurrent requests, each scoring in a worker thread (``ExactVectorIndex.search``). It loses
    much: the spinning threads take the cores the embedding model and the database need next, and a
    second process on the machine (another replica, a worker, the CLI) spins against this one's.
    With a ``trellis serve`` beside the benchmark's own runtime, both on one 2-core machine, an
    in-process hybrid search at 10,000 contexts took twice as long (bench/README.md, "The HTTP door").
    threadpoolctl is the maintained way to set this at run time, for whichever BLAS numpy loaded.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=1, user_api="blas")


# --- choosing ---------------------------------------------------------------------------------------


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
