"""OpenAI-compatible door: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

Any OpenAI SDK works against Trellis with ``base_url=http://host:8000/v1`` and a Trellis API key.
Errors use OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), chosen for paths
under ``/v1/`` in ``trellis.kit.handlers``.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from trellis.auth.deps import RuntimeDep, guard
from trellis.auth.schemas import Principal, Scope
from trellis.gateway.openai_schemas import (
    ChatCompletionOut,
    ChatCompletionRequest,
    CommonFields,
    CompletionRequestIn,
    EmbeddingRequest,
    EmbeddingsOut,
    ModelList,
    ResponseFormat,
    TextCompletionOut,
)
from trellis.gateway.service import CallContext, Gateway, StreamOutcome
from trellis.gateway.types import CompletionRequest, Message, Usage
from trellis.kit.errors import TrellisError, ValidationFailed
from trellis.kit.request_id import current_request_id
from trellis.settings import RouteClass

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
AiCaller = Annotated[Principal, Depends(guard(Scope.AI, RouteClass.AI))]


def _context(principal: Principal) -> CallContext:
    return CallContext(principal=principal, door="openai", request_id=current_request_id())


async def _prepare(
    gateway: Gateway,
    body: CommonFields,
    messages: list[Message],
    response_format: ResponseFormat | None,
    *,
    prompt_field: str = "messages",
) -> tuple[str, Any, CompletionRequest]:
    name, model = gateway.resolve(body.model, "chat")
    schema: dict[str, Any] | None = None
    json_object = False
    if response_format is not None and response_format.type == "json_schema":
        spec = response_format.json_schema or {}
        schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else None
        if schema is None:
            raise ValidationFailed.of(
                "response_format",
                "missing json_schema.schema",
                type="missing",
                summary="response_format.json_schema.schema must be a JSON schema object",
            )
    elif response_format is not None and response_format.type == "json_object":
        json_object = True
    request = await gateway.build_request(
        model,
        messages,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops,
        seed=body.seed,
        json_schema=schema,
        json_object=json_object,
        prompt_field=prompt_field,
    )
    return name, model, request


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish(reason: str | None) -> str:
    """OpenAI knows stop and length; cancelled or errored calls never reach a 200 here."""
    return "length" if reason == "length" else "stop"


def _completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _stream_events(
    gateway: Gateway,
    ctx: CallContext,
    name: str,
    model: Any,
    request: CompletionRequest,
    *,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    object_name = "chat.completion.chunk" if chat else "text_completion"
    created = int(time.time())
    ident = _completion_id("chatcmpl" if chat else "cmpl")
    outcome = StreamOutcome()
    stream = gateway.stream(ctx, name, model, request, outcome)

    def chunk(delta: str | None, finish: str | None) -> dict[str, Any]:
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {} if delta is None else {"content": delta},
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish}
        return {
            "id": ident,
            "object": object_name,
            "created": created,
            "model": outcome.served_model or name,
            "choices": [choice],
        }

    if chat:
        first = chunk(None, None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        yield _data(first)
    try:
        async for piece in stream:
            if piece.delta:
                yield _data(chunk(piece.delta, None))
    except TrellisError as exc:
        yield _data({"error": {"message": exc.message, "type": "server_error", "param": None, "code": exc.code}})
        return
    except Exception as exc:  # noqa: BLE001 - report the failure in-band, never a silent truncation
        yield _data(
            {
                "error": {
                    "message": str(getattr(exc, "message", "stream failed")),
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_error",
                }
            }
        )
        return
    finally:
        await stream.aclose()
    yield _data(chunk(None, _finish(outcome.finish_reason)))
    if include_usage and outcome.usage is not None:
        yield _data(
            {
                "id": ident,
                "object": object_name,
                "created": created,
                "model": outcome.served_model,
                "choices": [],
                "usage": _usage_json(outcome.usage),
            }
        )
    yield b"data: [DONE]\n\n"


@router.get("/models", summary="Models, OpenAI style", response_model=None, responses={200: {"model": ModelList}})
async def list_models(principal: AiCaller, runtime: RuntimeDep) -> dict[str, Any]:
    gateway = runtime.gateway
    names = sorted({*gateway.models, *(a for m in gateway.models.values() for a in m.aliases)})
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "trellis"} for n in names],
    }


@router.post(
    "/chat/completions",
    summary="Chat completion, OpenAI style",
    response_model=None,
    responses={200: {"model": ChatCompletionOut, "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def chat_completions(
    body: ChatCompletionRequest, principal: AiCaller, runtime: RuntimeDep
) -> dict[str, Any] | StreamingResponse:
    gateway = runtime.gateway
    messages = [Message("system" if m.role == "developer" else m.role, m.text()) for m in body.messages]
    name, model, request = await _prepare(gateway, body, messages, body.response_format)
    ctx = _context(principal)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_stream_events(gateway, ctx, name, model, request, chat=True, include_usage=include_usage))
    result = await gateway.complete(ctx, name, model, request)
    return {
        "id": _completion_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.served_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.completion.text},
                "finish_reason": _finish(result.completion.finish_reason),
            }
        ],
        "usage": _usage_json(result.completion.usage),
    }


@router.post(
    "/completions",
    summary="Text completion, OpenAI style",
    response_model=None,
    responses={200: {"model": TextCompletionOut, "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def completions(
    body: CompletionRequestIn, principal: AiCaller, runtime: RuntimeDep
) -> dict[str, Any] | StreamingResponse:
    gateway = runtime.gateway
    name, model, request = await _prepare(gateway, body, [Message("user", body.prompt)], None, prompt_field="prompt")
    ctx = _context(principal)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_stream_events(gateway, ctx, name, model, request, chat=False, include_usage=include_usage))
    result = await gateway.complete(ctx, name, model, request)
    return {
        "id": _completion_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": result.served_model,
        "choices": [
            {
                "index": 0,
                "text": result.completion.text,
                "logprobs": None,
                "finish_reason": _finish(result.completion.finish_reason),
            }
        ],
        "usage": _usage_json(result.completion.usage),
    }


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """``base64``: the vector's little-endian float32 bytes, as OpenAI sends them."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@router.post(
    "/embeddings", summary="Embeddings, OpenAI style", response_model=None, responses={200: {"model": EmbeddingsOut}}
)
async def embeddings(body: EmbeddingRequest, principal: AiCaller, runtime: RuntimeDep) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    name, result = await runtime.gateway.embed(_context(principal), body.model, texts)
    return {
        "object": "list",
        "model": name,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(result.vectors)
        ],
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
