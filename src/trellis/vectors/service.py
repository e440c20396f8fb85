"""Raw vector collections: what every door calls.

A collection is a user's named set of items, each an id, a vector of the collection's dimensions,
JSON metadata and optionally the text it was embedded from. Items given as text are embedded with
the collection's model through the gateway; a query may be a vector or a text too.

Search is exact: the matching items' vectors (after the metadata filter, applied in SQL) are read
and scored by cosine similarity with numpy. That is one pass over the collection per query —
milliseconds for tens of thousands of vectors, which is what collections here are for; the context
store's own semantic search (``trellis.context.index``) is the one with an in-memory cache and
pgvector. Vectors are stored as float32 little-endian bytes, like context embeddings.

Collections are addressed by name within their owner; another user's collection is a 404, for
admins too (names are per user, so there is nothing to address).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.auth.schemas import Principal
from trellis.episodic.schemas import Door
from trellis.gateway.service import CallContext, Gateway
from trellis.kit.clock import Clock
from trellis.kit.errors import Conflict, NotFound, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.vector_math import FloatArray, as_vector, normalized, to_blob, top_k, unit_rows
from trellis.storage.database import Database
from trellis.storage.metadata_filter import check_metadata_filter
from trellis.vectors import repository as repo
from trellis.vectors.models import VectorCollection, VectorItem
from trellis.vectors.schemas import CollectionCreate, ItemIn, QueryIn


def _not_found(name: str) -> NotFound:
    return NotFound("Vector collection not found", details={"name": name})


def _nearest(ids: list[str], blobs: bytes, dimensions: int, wanted: FloatArray, k: int) -> list[tuple[str, float]]:
    """The ``k`` items (id, cosine) nearest ``wanted`` among the float32 vectors packed in ``blobs``."""
    scores = unit_rows(blobs, len(ids), dimensions) @ normalized(wanted)
    return [(ids[i], float(scores[i])) for i in top_k(scores, k)]


class VectorCollections:
    def __init__(self, database: Database, gateway: Gateway, clock: Clock) -> None:
        self._database = database
        self._gateway = gateway
        self._clock = clock

    # --- collections --------------------------------------------------------------------------

    async def create(self, actor: Principal, data: CollectionCreate) -> VectorCollection:
        model = None
        if data.model is not None:
            try:
                model, _ = self._gateway.resolve(data.model, "embed")
            except NotFound:
                raise ValidationFailed.of(
                    "model", f"no embedding model {data.model!r} (see GET /api/v1/ai/models)", type="unknown_model"
                ) from None
        row = VectorCollection(
            id=new_id("vcol"),
            owner_id=actor.user_id,
            name=data.name,
            dimensions=data.dimensions,
            model=model,
            created_at=self._clock.now(),
        )
        try:
            async with self._database.transaction() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(
                f"You already have a vector collection named {data.name!r}", details={"name": data.name}
            ) from None
        return row

    async def list_all(self, actor: Principal) -> list[tuple[VectorCollection, int]]:
        async with self._database.session() as session:
            return await repo.collections_with_counts(session, actor.user_id)

    async def get(self, actor: Principal, name: str) -> tuple[VectorCollection, int]:
        async with self._database.session() as session:
            collection = await self._owned(session, actor, name)
            return collection, await repo.count_items(session, collection.id)

    async def delete(self, actor: Principal, name: str) -> int:
        """Delete a collection and its items; returns how many items went with it."""
        async with self._database.transaction() as session:
            collection = await self._owned(session, actor, name)
            removed = await repo.count_items(session, collection.id)
            await repo.delete_collection(session, collection.id)
        return removed

    # --- items ----------------------------------------------------------------------------------

    async def upsert(
        self,
        actor: Principal,
        name: str,
        items: Sequence[ItemIn],
        *,
        door: Door = "rest",
        request_id: str | None = None,
    ) -> list[str]:
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i, item_id in enumerate(ids) if item_id in ids[:i])
            raise ValidationFailed.of(
                f"items.{duplicate}.id", f"{ids[duplicate]!r} appears more than once in this request", type="duplicate"
            )
        async with self._database.session() as session:
            collection = await self._owned(session, actor, name)
        vectors = await self._vectors(actor, collection, items, door=door, request_id=request_id)
        now = self._clock.now()
        rows = [
            {
                "collection_id": collection.id,
                "item_id": item.id,
                "vector": to_blob(vector),
                "metadata": item.metadata,
                "text": item.text,
                "updated_at": now,
            }
            for item, vector in zip(items, vectors, strict=True)
        ]
        async with self._database.transaction() as session:
            # The collection may have been deleted since it was read: write only while it exists.
            if await session.get(VectorCollection, collection.id) is None:
                raise _not_found(name)
            await repo.upsert_items(session, self._database.dialect, rows)
        return ids

    async def get_item(self, actor: Principal, name: str, item_id: str) -> VectorItem:
        async with self._database.session() as session:
            collection = await self._owned(session, actor, name)
            item = await session.get(VectorItem, (collection.id, item_id))
        if item is None:
            raise NotFound("Vector item not found", details={"collection": name, "id": item_id})
        return item

    async def delete_items(self, actor: Principal, name: str, item_ids: Sequence[str]) -> int:
        async with self._database.transaction() as session:
            collection = await self._owned(session, actor, name)
            return await repo.delete_items(session, collection.id, item_ids)

    # --- query ----------------------------------------------------------------------------------

    async def query(
        self, actor: Principal, name: str, data: QueryIn, *, door: Door = "rest", request_id: str | None = None
    ) -> tuple[str | None, list[tuple[VectorItem, float]]]:
        """The ``top_k`` items nearest the query (after the filter), best first, and the model that
        embedded a text query."""
        filters = check_metadata_filter(data.filter, field="filter")
        async with self._database.session() as session:
            collection = await self._owned(session, actor, name)
        model = None
        if data.vector is not None:
            wanted = as_vector(data.vector)
            if wanted.shape[0] != collection.dimensions:
                raise ValidationFailed.of(
                    "vector",
                    f"has {wanted.shape[0]} dimensions; collection {name!r} has {collection.dimensions}",
                    type="dimension_mismatch",
                )
        else:
            assert data.text is not None
            model = self._require_model(collection, "text")
            [wanted] = await self._embed(actor, collection, model, [data.text], ["text"], door, request_id)

        async with self._database.session() as session:
            candidates = await repo.candidate_vectors(session, self._database.dialect, collection.id, filters)
            ids = [item_id for item_id, blob in candidates if len(blob) == 4 * collection.dimensions]
            if not ids:
                return model, []
            blobs = b"".join(blob for _, blob in candidates if len(blob) == 4 * collection.dimensions)
            # In a worker thread, as the context store's exact index: the event loop serves meanwhile.
            best = await asyncio.to_thread(_nearest, ids, blobs, collection.dimensions, wanted, data.top_k)
            by_id = await repo.items_by_ids(session, collection.id, [i for i, _ in best])
        return model, [(by_id[item_id], score) for item_id, score in best if item_id in by_id]

    # --- helpers ----------------------------------------------------------------------------------

    async def _owned(self, session: AsyncSession, actor: Principal, name: str) -> VectorCollection:
        collection = await repo.owned_collection(session, actor.user_id, name)
        if collection is None:
            raise _not_found(name)
        return collection

    @staticmethod
    def _require_model(collection: VectorCollection, field: str) -> str:
        if collection.model is None:
            raise ValidationFailed.of(
                field,
                f"collection {collection.name!r} has no model to embed text with; send a vector, or create the "
                "collection with a model",
                type="no_model",
            )
        return collection.model

    async def _vectors(
        self,
        actor: Principal,
        collection: VectorCollection,
        items: Sequence[ItemIn],
        *,
        door: Door,
        request_id: str | None,
    ) -> list[Any]:
        vectors: list[Any] = [None] * len(items)
        texts: list[tuple[int, str]] = []
        for index, item in enumerate(items):
            if item.vector is None:
                assert item.text is not None
                texts.append((index, item.text))
                continue
            vector = as_vector(item.vector)
            if vector.shape[0] != collection.dimensions:
                raise ValidationFailed.of(
                    f"items.{index}.vector",
                    f"item {item.id!r} has {vector.shape[0]} dimensions; collection {collection.name!r} has "
                    f"{collection.dimensions}",
                    type="dimension_mismatch",
                )
            vectors[index] = vector
        if texts:
            model = self._require_model(collection, f"items.{texts[0][0]}.text")
            embedded = await self._embed(
                actor,
                collection,
                model,
                [text for _, text in texts],
                [f"items.{index}.text" for index, _ in texts],
                door,
                request_id,
                item_ids=[items[index].id for index, _ in texts],
            )
            for (index, _), vector in zip(texts, embedded, strict=True):
                vectors[index] = vector
        return vectors

    async def _embed(
        self,
        actor: Principal,
        collection: VectorCollection,
        model: str,
        texts: list[str],
        fields: list[str],
        door: Door,
        request_id: str | None,
        *,
        item_ids: list[str] | None = None,
    ) -> list[Any]:
        ctx = CallContext(principal=actor, door=door, request_id=request_id)
        _, result = await self._gateway.embed(ctx, model, texts)
        vectors = [as_vector(v) for v in result.vectors]
        for position, vector in enumerate(vectors):
            if vector.shape[0] != collection.dimensions:
                what = f"item {item_ids[position]!r}" if item_ids else "the query"
                raise ValidationFailed.of(
                    fields[position],
                    f"{what}: model {model!r} gives {vector.shape[0]} dimensions; collection {collection.name!r} "
                    f"has {collection.dimensions}",
                    type="dimension_mismatch",
                )
        return vectors
