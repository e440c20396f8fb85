"""``PgVectorIndex``: pgvector's HNSW graph (over half-precision copies since migration 0006), with
an exact rerun when the walk returns fewer than k rows. See the package docstring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, Integer, Select, bindparam, cast, literal_column, select, text
from sqlalchemy.dialects.postgresql import ARRAY, REAL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import UserDefinedType

from trellis.context.index.base import DEFAULT_EF_SEARCH, NO_FILTER, VectorEntry, VectorFilter, VectorHit
from trellis.context.index.exact import ExactVectorIndex
from trellis.context.index.models import ContextEmbedding
from trellis.context.index.repository import delete_rows, upsert_rows
from trellis.context.models import Context
from trellis.kit.vector_math import FloatArray, as_vector
from trellis.storage.database import Database
from trellis.storage.metadata_filter import metadata_clause


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
        await delete_rows(self._database, owner_id, context_ids)
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

    def search_statement(self, owner_id: str, model: str, filters: VectorFilter, k: int, *, exact: bool) -> Select[Any]:
        """The statement a search sends, with everything but the query vector (``q``, a list of
        floats) bound: for EXPLAIN and the benchmarks."""
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
