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
from pydantic import ValidationError as PydanticValidationError

from trellis.auth.deps import RuntimeDep, guard
from trellis.auth.schemas import Principal, Scope
from trellis.gateway import structured
from trellis.gateway.openai_schemas import (
    ChatCompletionOut,
    ChatCompletionRequest,
    CommonFields,
    CompletionRequestIn,
    EmbeddingRequest,
    EmbeddingsOut,
    ModelList,
    NamedToolChoice,
    ResponseFormat,
    TextCompletionOut,
)
from trellis.gateway.service import CallContext, Gateway, StreamOutcome
from trellis.gateway.types import CompletionRequest, Message, ToolCall, ToolCallDelta, ToolSpec, Usage
from trellis.kit.errors import TrellisError, ValidationFailed
from trellis.kit.request_id import current_request_id
from trellis.settings import RouteClass

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
AiCaller = Annotated[Principal, Depends(guard(Scope.AI, RouteClass.AI))]


def _context(principal: Principal) -> CallContext:
    return CallContext(principal=principal, door="openai", request_id=current_request_id())


def _refuse_unhonoured(body: CommonFields) -> None:
    found = body.unhonoured()
    if found is not None:
        field, message = found
        raise ValidationFailed.of(field, message, type="unsupported_parameter", summary=f"{field}: {message}")


def _response_format(response_format: ResponseFormat | None) -> tuple[dict[str, Any] | None, bool]:
    """The schema the answer must satisfy, and whether it must be a JSON object."""
    if response_format is None or response_format.type == "text":
        return None, False
    if response_format.type == "json_object":
        return None, True
    spec = response_format.json_schema
    if spec is None or spec.json_schema is None:
        raise ValidationFailed.of(
            "response_format.json_schema.schema",
            "missing",
            type="missing",
            summary="response_format.json_schema.schema must be a JSON schema object",
        )
    structured.check_schema(spec.json_schema, "response_format.json_schema.schema")
    schema: dict[str, Any] = spec.json_schema
    return schema, False


def _tools(body: ChatCompletionRequest) -> tuple[list[ToolSpec], str]:
    tools: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(body.tools or []):
        function = tool.function
        if function.name in seen:
            raise ValidationFailed.of(f"tools.{i}.function.name", f"{function.name!r} is offered twice")
        seen.add(function.name)
        parameters = function.parameters if function.parameters is not None else {"type": "object", "properties": {}}
        structured.check_schema(parameters, f"tools.{i}.function.parameters")
        if parameters.get("type", "object") != "object":
            raise ValidationFailed.of(f"tools.{i}.function.parameters", "must describe an object (type: object)")
        tools.append(ToolSpec(function.name, function.description or "", parameters))
    choice = body.tool_choice
    if isinstance(choice, dict):
        try:
            name = NamedToolChoice.model_validate(choice).function.name
        except PydanticValidationError:
            raise ValidationFailed.of(
                "tool_choice", 'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
            ) from None
        if name not in seen:
            raise ValidationFailed.of("tool_choice.function.name", f"{name!r} is not among the tools")
    elif choice is None:
        name = "auto" if tools else "none"
    elif choice in ("none", "auto", "required"):
        name = choice
    else:
        raise ValidationFailed.of("tool_choice", f'{choice!r} is not "none", "auto", "required" or a named function')
    if not tools and name != "none":
        raise ValidationFailed.of("tool_choice", "needs tools to choose from", type="missing")
    return tools, name


def _messages(body: ChatCompletionRequest) -> list[Message]:
    """The conversation, with its function calls and results. A tool turn must answer a call an
    earlier assistant turn made (as OpenAI requires), so a conversation is never half-understood."""
    messages: list[Message] = []
    call_ids: set[str] = set()
    for i, m in enumerate(body.messages):
        if m.role == "tool":
            if not m.tool_call_id:
                raise ValidationFailed.of(f"messages.{i}.tool_call_id", "required for a tool message", type="missing")
            if m.tool_call_id not in call_ids:
                raise ValidationFailed.of(
                    f"messages.{i}.tool_call_id", f"{m.tool_call_id!r} answers no earlier tool call", type="unknown_id"
                )
            messages.append(Message("tool", m.text(), tool_call_id=m.tool_call_id))
            continue
        if m.tool_calls and m.role != "assistant":
            raise ValidationFailed.of(f"messages.{i}.tool_calls", "only assistant messages carry tool calls")
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        call_ids.update(c.id for c in calls)
        messages.append(Message("system" if m.role == "developer" else m.role, m.text(), tool_calls=calls))
    return messages


def _passthrough(body: ChatCompletionRequest) -> dict[str, Any]:
    """What an OpenAI-compatible upstream gets as the client sent it."""
    fields = {"response_format", "tools", "tool_choice", "parallel_tool_calls"}
    return body.model_dump(include=fields, exclude_none=True, by_alias=True)


async def _prepare(
    gateway: Gateway,
    body: CommonFields,
    messages: list[Message],
    *,
    prompt_field: str = "messages",
) -> tuple[str, Any, CompletionRequest]:
    _refuse_unhonoured(body)
    name, model = gateway.resolve(body.model, "chat")
    schema: dict[str, Any] | None = None
    json_object = False
    tools: list[ToolSpec] = []
    tool_choice = "none"
    passthrough: dict[str, Any] = {}
    if isinstance(body, ChatCompletionRequest):
        schema, json_object = _response_format(body.response_format)
        tools, tool_choice = _tools(body)
        passthrough = _passthrough(body)
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
        tools=tools,
        tool_choice=tool_choice,
        passthrough=passthrough,
        prompt_field=prompt_field,
    )
    return name, model, request


def _tool_calls_json(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _delta_json(delta: ToolCallDelta) -> dict[str, Any]:
    """One streamed function-call piece, as OpenAI streams them."""
    function: dict[str, Any] = {"arguments": delta.arguments}
    out: dict[str, Any] = {"index": delta.index, "function": function}
    if delta.id is not None:
        out["id"], out["type"] = delta.id, "function"
    if delta.name is not None:
        function["name"] = delta.name
    return out


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish(reason: str | None) -> str:
    """OpenAI knows stop, length and tool_calls; cancelled or errored calls never reach a 200 here."""
    return reason if reason in ("length", "tool_calls") else "stop"


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

    def chunk(delta: str | None, finish: str | None, calls: tuple[ToolCallDelta, ...] = ()) -> dict[str, Any]:
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {} if delta is None else {"content": delta},
                "finish_reason": finish,
            }
            if calls:
                choice["delta"] = {"tool_calls": [_delta_json(c) for c in calls]}
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
            if piece.tool_calls and chat:
                yield _data(chunk(None, None, piece.tool_calls))
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
    name, model, request = await _prepare(gateway, body, _messages(body))
    ctx = _context(principal)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _sse(_stream_events(gateway, ctx, name, model, request, chat=True, include_usage=include_usage))
    result = await gateway.complete(ctx, name, model, request)
    completion = result.completion
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    if completion.tool_calls:
        message = {"role": "assistant", "content": completion.text or None}
        message["tool_calls"] = _tool_calls_json(completion.tool_calls)
    return {
        "id": _completion_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.served_model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(completion.finish_reason)}],
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
    name, model, request = await _prepare(gateway, body, [Message("user", body.prompt)], prompt_field="prompt")
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
