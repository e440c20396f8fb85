"""REST door of the context store's core: ``/api/context``. Endpoints parse, call the service, shape.

Every context response carries ``ETag: "<version>"``; ``If-Match`` with that value (``3``, ``"3"``
or ``W/"3"``) makes an update or delete conditional: 409 ``conflict_error`` with
``details.current_version`` when the context has moved on.

Static paths under ``/api/context/`` (``types`` here; ``search`` and ``ingest`` in their own
routers, included before this one) must be declared before ``/{context_id}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from trellis.auth.deps import Reader, RuntimeDep, Writer
from trellis.context.models import Context
from trellis.context.schemas import (
    DEFAULT_PAGE,
    MAX_PAGE,
    NAME_MAX_LENGTH,
    ContextCreate,
    ContextCreated,
    ContextDeleted,
    ContextListQuery,
    ContextOut,
    ContextPage,
    ContextTypes,
    ContextUpdate,
    Direction,
    GraphOut,
    RelationshipCreate,
    RelationshipOut,
    parse_version_tag,
    version_etag,
)
from trellis.kit.envelope import Envelope, ok
from trellis.kit.errors import ValidationFailed
from trellis.storage.metadata_filter import metadata_filter_from_strings

router = APIRouter(prefix="/api/context", tags=["context"])

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='The version this write is based on: 3, "3" or W/"3" (the ETag of a read). Stale → 409.',
    ),
]
RelationshipTypeQuery = Annotated[
    str | None, Query(min_length=1, max_length=NAME_MAX_LENGTH, description="Only relationships of this type.")
]

Responses = dict[int | str, dict[str, Any]]
METADATA_PREFIX = "metadata."
NOT_FOUND: Responses = {404: {"description": "No such context, or another user's (not_found_error)"}}
CONFLICT: Responses = {409: {"description": "Stale If-Match / version: details.current_version (conflict_error)"}}
TOO_LARGE: Responses = {413: {"description": "content over [context] max_content_bytes (payload_too_large_error)"}}
FORBIDDEN: Responses = {403: {"description": "A non-admin named another owner (authorization_error)"}}


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    try:
        return parse_version_tag(if_match)
    except ValueError as exc:
        message = str(exc)
        raise ValidationFailed.of("If-Match", message, location="header", summary=message) from None


def _with_etag(response: Response, row: Context) -> ContextOut:
    response.headers["ETag"] = version_etag(row.version)
    return ContextOut.of(row)


@router.get("/types", summary="Known context types (any other matching the pattern is accepted too)")
async def context_types(principal: Reader, runtime: RuntimeDep) -> Envelope[ContextTypes]:
    return ok(ContextTypes(known_types=runtime.context.known_types()))


@router.get(
    "",
    summary="List your contexts (admins: any owner's): filter by type, metadata and time; sort; page with a cursor",
    description="Metadata filters are query parameters named `metadata.<key>`, as in search. Pages are "
    "keyset-paged: pass `next_cursor` back as `cursor` (with the same filters and sort) for the next one.",
    responses=FORBIDDEN,
)
async def list_contexts(
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    type: Annotated[  # the seed's parameter name
        list[str] | None, Query(description="Only these types (repeat or comma-separate).")
    ] = None,
    created_after: Annotated[
        datetime | None, Query(description="Created at or after (ISO 8601; UTC if no offset).")
    ] = None,
    created_before: Annotated[datetime | None, Query(description="Created before.")] = None,
    updated_after: Annotated[datetime | None, Query(description="Updated at or after.")] = None,
    updated_before: Annotated[datetime | None, Query(description="Updated before.")] = None,
    sort: Annotated[str, Query(description="updated, -updated (default), created or -created.")] = "-updated",
    limit: Annotated[int, Query(description=f"Page size, 1-{MAX_PAGE}.")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page.")] = None,
    owner: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Whose contexts: yours by default; an admin may name a user id or `all` (403 for anyone else).",
        ),
    ] = None,
) -> Envelope[ContextPage]:
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k.startswith(METADATA_PREFIX)]
    query = ContextListQuery.parse(
        types=type or (),
        metadata=metadata_filter_from_strings(pairs, prefix=METADATA_PREFIX),
        created_after=created_after,
        created_before=created_before,
        updated_after=updated_after,
        updated_before=updated_before,
        sort=sort,
        limit=limit,
        cursor=cursor,
        owner=owner,
    )
    rows, next_cursor = await runtime.context.list_page(principal, query)
    return ok(ContextPage.of(rows, next_cursor, ContextOut.of))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a context, optionally with outgoing relationships",
    description="The context and its relationships are created together or not at all: a missing target, or "
    "another user's, answers 404 and creates nothing.",
    responses={**NOT_FOUND, **TOO_LARGE},
)
async def create_context(
    body: ContextCreate, principal: Writer, runtime: RuntimeDep, response: Response
) -> Envelope[ContextCreated]:
    row, edges = await runtime.context.create(principal, body)
    out = _with_etag(response, row)
    return ok(ContextCreated(**out.model_dump(), relationships=[RelationshipOut.of(e, row.id) for e in edges]))


@router.get("/{context_id}", summary="One context", responses=NOT_FOUND)
async def get_context(
    context_id: str, principal: Reader, runtime: RuntimeDep, response: Response
) -> Envelope[ContextOut]:
    return ok(_with_etag(response, await runtime.context.get(principal, context_id)))


@router.put(
    "/{context_id}",
    summary="Update a context: the fields given replace the stored ones; the version goes up by one",
    description="Send the version the change is based on as `If-Match` or as `version` in the body: if another "
    "write came first, 409 with `details.current_version` and nothing is written. Without either, the last "
    "writer wins. Metadata, when given, replaces the stored object as a whole.",
    responses={**NOT_FOUND, **CONFLICT, **TOO_LARGE},
)
async def update_context(
    context_id: str,
    body: ContextUpdate,
    principal: Writer,
    runtime: RuntimeDep,
    response: Response,
    if_match: IfMatch = None,
) -> Envelope[ContextOut]:
    row = await runtime.context.update(principal, context_id, body, expected_version=_expected_version(if_match))
    return ok(_with_etag(response, row))


@router.delete(
    "/{context_id}",
    summary="Delete a context with its relationships (both directions)",
    responses={**NOT_FOUND, **CONFLICT},
)
async def delete_context(
    context_id: str, principal: Writer, runtime: RuntimeDep, if_match: IfMatch = None
) -> Envelope[ContextDeleted]:
    return ok(await runtime.context.delete(principal, context_id, expected_version=_expected_version(if_match)))


@router.post(
    "/{context_id}/relationships",
    status_code=status.HTTP_201_CREATED,
    summary="Relate this context to another of yours",
    description="Strength is from 0 to 1. A relationship to the context itself is refused (400); a missing "
    "target, or another user's, answers 404. The same (source, target, relationship_type) twice answers "
    "409 `conflict_error` with `details.relationship_id` of the existing one.",
    responses={**NOT_FOUND, 409: {"description": "Duplicate relationship (conflict_error)"}},
)
async def create_relationship(
    context_id: str, body: RelationshipCreate, principal: Writer, runtime: RuntimeDep
) -> Envelope[RelationshipOut]:
    return ok(await runtime.context.add_relationship(principal, context_id, body))


@router.get(
    "/{context_id}/relationships",
    summary="This context's relationships, both directions, each marked outgoing or incoming",
    responses=NOT_FOUND,
)
async def list_relationships(
    context_id: str,
    principal: Reader,
    runtime: RuntimeDep,
    relationship_type: RelationshipTypeQuery = None,
    direction: Annotated[Direction | None, Query(description="Only outgoing or only incoming.")] = None,
) -> Envelope[list[RelationshipOut]]:
    return ok(
        await runtime.context.list_relationships(
            principal, context_id, relationship_type=relationship_type, direction=direction
        )
    )


@router.delete(
    "/{context_id}/relationships/{relationship_id}",
    summary="Delete one of this context's relationships (either direction)",
    responses=NOT_FOUND,
)
async def delete_relationship(
    context_id: str, relationship_id: str, principal: Writer, runtime: RuntimeDep
) -> Envelope[RelationshipOut]:
    return ok(await runtime.context.delete_relationship(principal, context_id, relationship_id))


@router.get(
    "/{context_id}/graph",
    summary="The contexts around this one: breadth-first over relationships, both directions",
    description="`depth` levels (1 to [context] max_graph_depth, default 2); cycles are visited once; at most "
    "[context] max_graph_nodes nodes (`truncated` says when the limit was hit). Nodes carry a content preview.",
    responses=NOT_FOUND,
)
async def context_graph(
    context_id: str,
    principal: Reader,
    runtime: RuntimeDep,
    depth: Annotated[int, Query(ge=1, description="Levels to follow (at most [context] max_graph_depth).")] = 2,
    relationship_type: RelationshipTypeQuery = None,
) -> Envelope[GraphOut]:
    return ok(await runtime.context.graph(principal, context_id, depth=depth, relationship_type=relationship_type))
