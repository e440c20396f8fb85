"""``GET /health`` (the process is alive) and ``GET /ready`` (it can serve: 503 names what fails)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from trellis import __version__
from trellis.auth.deps import RuntimeDep
from trellis.context.search.rerank import CrossEncoder
from trellis.health.service import readiness

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    responses={
        503: {
            "description": "Some dependency is failing; `failing` names it (`degraded` names parts that work "
            "in a reduced way, such as an event bus that lost Redis or a search reranker that cannot load).",
            "content": {"application/json": {"schema": {"type": "object", "required": ["status"]}}},
        }
    },
)
async def ready(runtime: RuntimeDep) -> JSONResponse:
    engine = runtime.search.reranker
    status = None if engine is None else _status_of(engine)
    report = await readiness(runtime.database, runtime.redis, runtime.bus, status)
    return JSONResponse(report, status_code=503 if report["failing"] else 200)


def _status_of(engine: CrossEncoder) -> Callable[[], dict[str, Any]]:
    return lambda: engine.status().report()
