"""REST door for context search: ``GET /api/context/search``. Parse, call ``ContextSearch``, shape.

Metadata filters are query parameters named ``metadata.<key>``: ``?metadata.lang=python`` keeps
contexts whose metadata has ``"lang": "python"``; a value that spells a number, ``true``, ``false``
or ``null`` also matches that JSON value (``metadata.year=2024`` matches ``2024`` and ``"2024"``);
a key given twice matches either value; different keys must all match. ``type`` may be repeated
or comma-separated (any of).

This router is included before the core's ``/api/context/{context_id}``, so ``search`` is never
taken for an id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from trellis.auth.deps import Reader, RuntimeDep
from trellis.context.search.schemas import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    Grouping,
    SearchMode,
    SearchOut,
    SearchQuery,
)
from trellis.kit.envelope import Envelope, ok
from trellis.kit.request_id import current_request_id
from trellis.storage.metadata_filter import metadata_filter_from_strings

router = APIRouter(prefix="/api/context", tags=["context"])
METADATA_PREFIX = "metadata."


@router.get(
    "/search",
    summary="Search your contexts: keyword, semantic, or hybrid (reciprocal rank fusion of both)",
    responses={400: {"description": "Empty query, unknown mode, limit outside 1..100, bad filter (validation_error)"}},
)
async def search_contexts(
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    # The rules are in the schema too: FastAPI refuses a missing, empty or blank query, an unknown
    # mode and a limit out of range with the same 400 naming the field that SearchQuery.parse gives.
    query: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            pattern=r"\S",
            description=f"What to look for (1-{MAX_QUERY_CHARS} characters, not all blank); any text, no syntax.",
        ),
    ],
    mode: Annotated[SearchMode, Query(description="hybrid (default), semantic or keyword.")] = SearchMode.HYBRID,
    type: Annotated[  # the seed's parameter name
        list[str] | None, Query(description="Only contexts of these types (repeat or comma-separate).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"How many hits, 1-{MAX_LIMIT}.")] = DEFAULT_LIMIT,
    group: Annotated[
        Grouping,
        Query(
            description="context (default): a hit per context; document: a hit per ingested document, "
            "its contexts' scores fused, its best-matching context shown."
        ),
    ] = Grouping.CONTEXT,
    passages: Annotated[
        bool, Query(description="Each hit also carries the text of its best-matching chunk (`passage`).")
    ] = False,
    rerank: Annotated[
        bool,
        Query(
            description="Reorder the best fused candidates ([context] rerank_depth, 20) with a cross-encoder: "
            "better ranking of paraphrased questions, tens of milliseconds per candidate. Each hit says its "
            "`rerank_score`; `rerank` in the answer says whether it was applied and, if not, why."
        ),
    ] = False,
) -> Envelope[SearchOut]:
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k.startswith(METADATA_PREFIX)]
    parsed = SearchQuery.parse(
        query,
        mode=mode.value,
        types=type or (),
        metadata=metadata_filter_from_strings(pairs, prefix=METADATA_PREFIX),
        limit=limit,
        group=group.value,
        passages=passages,
        rerank=rerank,
    )
    result = await runtime.search.search(principal, parsed, door="rest", request_id=current_request_id())
    return ok(SearchOut.of(result))
