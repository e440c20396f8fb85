"""REST door for changing the embedding model: ``POST /api/context/reindex`` starts a reindex (202),
``GET /api/context/reindex`` shows its progress. Admins only. See ``trellis.context.index.reindex``.

This router is included before the core's ``/api/context/{context_id}``, so ``reindex`` is never
taken for an id.
"""

from __future__ import annotations

from fastapi import APIRouter, status

from trellis.auth.deps import Admin, RuntimeDep
from trellis.context.index.schemas import ReindexOut, ReindexRequest
from trellis.kit.envelope import Envelope, ok

router = APIRouter(prefix="/api/context", tags=["context"])


@router.post(
    "/reindex",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-embed every context with an embedding model, in the background, then switch searches to it",
    description="Searches keep using the current model's vectors until every context has one of the new "
    "model, then switch at once. The body may be omitted (the configured default embedding model).",
    responses={
        400: {"description": "Unknown model, a model that cannot embed, or a bad body (validation_error)"},
        403: {"description": "Not an admin (authorization_error)"},
        409: {"description": "A reindex is already running (conflict_error)"},
    },
)
async def start_reindex(
    principal: Admin, runtime: RuntimeDep, body: ReindexRequest | None = None
) -> Envelope[ReindexOut]:
    model = body.model if body is not None else None
    return ok(await runtime.reindexer.start(principal, model, door="rest"))


@router.get(
    "/reindex",
    summary="The active embedding model and the reindex's progress",
    responses={403: {"description": "Not an admin (authorization_error)"}},
)
async def reindex_status(principal: Admin, runtime: RuntimeDep) -> Envelope[ReindexOut]:
    return ok(await runtime.reindexer.status(principal))
