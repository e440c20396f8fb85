"""REST door for vector collections: ``/api/v1/db/vectors``. Parse, call ``VectorCollections``, shape.

    POST   /collections                           create {name, dimensions, model?}
    GET    /collections                           yours, by name
    GET    /collections/{name}                    one, with its item count
    DELETE /collections/{name}                    it and its items
    PUT    /collections/{name}/items              upsert [{id, vector | text, metadata}] (POST too)
    GET    /collections/{name}/items/{id}         one item, with its vector
    POST   /collections/{name}/items/delete       {ids: [...]}
    DELETE /collections/{name}/items/{id}         one item
    POST   /collections/{name}/query              {vector | text, top_k, filter, include_vectors}

Text (items or query) is embedded with the collection's model. A vector of the wrong length is a
400 naming the item; an unknown collection, or another user's, is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from trellis.auth.deps import Reader, RuntimeDep, Writer
from trellis.kit.envelope import Envelope, ok
from trellis.kit.request_id import current_request_id
from trellis.vectors.schemas import (
    CollectionCreate,
    CollectionDeleted,
    CollectionOut,
    ItemOut,
    ItemsDelete,
    ItemsDeleted,
    ItemsUpsert,
    ItemsUpserted,
    QueryHit,
    QueryIn,
    QueryOut,
)

router = APIRouter(prefix="/api/v1/db/vectors", tags=["vectors"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such collection of yours (not_found_error)"}}


@router.post(
    "/collections",
    status_code=status.HTTP_201_CREATED,
    summary="Create a vector collection",
    responses={409: {"description": "You already have a collection of this name (conflict_error)"}},
)
async def create_collection(body: CollectionCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[CollectionOut]:
    return ok(CollectionOut.of(await runtime.vectors.create(principal, body), 0))


@router.get("/collections", summary="Your vector collections")
async def list_collections(principal: Reader, runtime: RuntimeDep) -> Envelope[list[CollectionOut]]:
    return ok([CollectionOut.of(c, n) for c, n in await runtime.vectors.list_all(principal)])


@router.get("/collections/{name}", summary="One vector collection", responses=NOT_FOUND)
async def get_collection(name: str, principal: Reader, runtime: RuntimeDep) -> Envelope[CollectionOut]:
    collection, count = await runtime.vectors.get(principal, name)
    return ok(CollectionOut.of(collection, count))


@router.delete("/collections/{name}", summary="Delete a collection and its items", responses=NOT_FOUND)
async def delete_collection(name: str, principal: Writer, runtime: RuntimeDep) -> Envelope[CollectionDeleted]:
    removed = await runtime.vectors.delete(principal, name)
    return ok(CollectionDeleted(name=name, items_removed=removed))


async def _upsert(name: str, body: ItemsUpsert, principal: Writer, runtime: RuntimeDep) -> Envelope[ItemsUpserted]:
    ids = await runtime.vectors.upsert(principal, name, body.items, door="rest", request_id=current_request_id())
    return ok(ItemsUpserted(upserted=len(ids), ids=ids))


router.add_api_route(
    "/collections/{name}/items",
    _upsert,
    methods=["PUT"],
    summary="Upsert items: each a vector or a text (embedded with the collection's model)",
    responses=NOT_FOUND,
    name="upsert_items",
)
router.add_api_route(
    "/collections/{name}/items",
    _upsert,
    methods=["POST"],
    summary="Upsert items (the same as PUT)",
    responses=NOT_FOUND,
    name="upsert_items_post",
)


@router.post("/collections/{name}/items/delete", summary="Delete items by id", responses=NOT_FOUND)
async def delete_items(name: str, body: ItemsDelete, principal: Writer, runtime: RuntimeDep) -> Envelope[ItemsDeleted]:
    return ok(ItemsDeleted(deleted=await runtime.vectors.delete_items(principal, name, body.ids)))


@router.get("/collections/{name}/items/{item_id}", summary="One item, with its vector", responses=NOT_FOUND)
async def get_item(name: str, item_id: str, principal: Reader, runtime: RuntimeDep) -> Envelope[ItemOut]:
    return ok(ItemOut.of(await runtime.vectors.get_item(principal, name, item_id)))


@router.delete("/collections/{name}/items/{item_id}", summary="Delete one item", responses=NOT_FOUND)
async def delete_item(name: str, item_id: str, principal: Writer, runtime: RuntimeDep) -> Envelope[ItemsDeleted]:
    return ok(ItemsDeleted(deleted=await runtime.vectors.delete_items(principal, name, [item_id])))


@router.post("/collections/{name}/query", summary="The items nearest a vector or a text", responses=NOT_FOUND)
async def query_collection(name: str, body: QueryIn, principal: Reader, runtime: RuntimeDep) -> Envelope[QueryOut]:
    model, hits = await runtime.vectors.query(principal, name, body, door="rest", request_id=current_request_id())
    return ok(
        QueryOut(
            collection=name,
            model=model,
            hits=[QueryHit.hit(item, score, with_vector=body.include_vectors) for item, score in hits],
        )
    )
