"""REST door of the gateway: ``/api/v1/ai/{generate,chat,code,analyze}`` and ``/api/v1/ai/models``.

Endpoints parse, call ``trellis.gateway.service.Gateway`` (through ``trellis.gateway.tasks`` for the
task-shaped calls), and shape the envelope. ``stream: true`` answers with Server-Sent Events:
``event: delta`` with ``{"text": ...}``, then ``event: done`` with the same data a non-streamed
call returns, or ``event: error`` with the envelope's error object.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from trellis.auth.deps import RuntimeDep, guard
from trellis.auth.schemas import Principal, Scope
from trellis.gateway import tasks
from trellis.gateway.schemas import (
    AnalyzeOut,
    AnalyzeRequest,
    ChatRequest,
    CodeOut,
    CodeRequest,
    GenerateRequest,
    GenerationOut,
    ModelOut,
)
from trellis.gateway.service import CallContext
from trellis.kit.envelope import Envelope, ok
from trellis.kit.request_id import current_request_id
from trellis.settings import RouteClass

router = APIRouter(prefix="/api/v1/ai", tags=["ai"])
AiCaller = Annotated[Principal, Depends(guard(Scope.AI, RouteClass.AI))]
ModelReader = Annotated[Principal, Depends(guard(Scope.READ))]

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON envelope, or SSE when stream"}
}


def _context(principal: Principal, cache: tasks.CacheMode) -> CallContext:
    return CallContext(principal=principal, door="rest", request_id=current_request_id(), cache=cache)


def _sse(events: tasks.EventStream) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post("/generate", summary="Generate text from a prompt", responses=SSE_RESPONSES, response_model=None)
async def generate(
    body: GenerateRequest, principal: AiCaller, runtime: RuntimeDep, request: Request
) -> Envelope[GenerationOut] | StreamingResponse:
    prepared = await tasks.prepare_generate(runtime.gateway, body)
    ctx = _context(principal, body.cache)
    if body.stream:
        return _sse(tasks.sse_events(runtime.gateway, ctx, prepared, request.is_disconnected))
    return ok(await tasks.run(runtime.gateway, ctx, prepared))


@router.post("/chat", summary="Chat with a model", responses=SSE_RESPONSES, response_model=None)
async def chat(
    body: ChatRequest, principal: AiCaller, runtime: RuntimeDep, request: Request
) -> Envelope[GenerationOut] | StreamingResponse:
    prepared = await tasks.prepare_chat(runtime.gateway, body)
    ctx = _context(principal, body.cache)
    if body.stream:
        return _sse(tasks.sse_events(runtime.gateway, ctx, prepared, request.is_disconnected))
    return ok(await tasks.run(runtime.gateway, ctx, prepared))


@router.post("/code", summary="Generate code; code blocks are extracted", responses=SSE_RESPONSES, response_model=None)
async def code(
    body: CodeRequest, principal: AiCaller, runtime: RuntimeDep, request: Request
) -> Envelope[CodeOut] | StreamingResponse:
    prepared = await tasks.prepare_code(runtime.gateway, body)
    ctx = _context(principal, body.cache)
    if body.stream:
        return _sse(tasks.sse_events(runtime.gateway, ctx, prepared, request.is_disconnected))
    return ok(tasks.as_code(await tasks.run(runtime.gateway, ctx, prepared), body.language))


@router.post("/analyze", summary="Structured analysis validated against a JSON schema")
async def analyze(body: AnalyzeRequest, principal: AiCaller, runtime: RuntimeDep) -> Envelope[AnalyzeOut]:
    prepared = await tasks.prepare_analyze(runtime.gateway, body)
    ctx = _context(principal, body.cache)
    return ok(tasks.as_analysis(await tasks.run(runtime.gateway, ctx, prepared), body, prepared))


@router.get("/models", summary="Configured models and whether they are healthy")
async def models(principal: ModelReader, runtime: RuntimeDep) -> Envelope[list[ModelOut]]:
    return ok(await tasks.list_models(runtime.gateway))
