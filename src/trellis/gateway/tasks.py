"""Task-shaped calls over the gateway (generate, chat, code, analyze), shared by every door.

Each ``prepare_*`` turns a request into messages and a validated ``CompletionRequest``; ``run``
executes it; ``as_code`` / ``as_analysis`` shape the result; ``sse_events`` streams it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema

from trellis.gateway.schemas import (
    AnalyzeOut,
    AnalyzeRequest,
    ChatRequest,
    CodeOut,
    CodeRequest,
    GenerateRequest,
    GenerationOut,
    ModelOut,
    SamplingFields,
)
from trellis.gateway.service import BadGateway, CallContext, Gateway, GatewayResult, StreamOutcome
from trellis.gateway.types import CompletionRequest, Message
from trellis.kit.errors import TrellisError, ValidationFailed
from trellis.settings.gateway import ModelConfig

CacheMode = Literal["auto", "bypass", "force"]
EventStream = AsyncIterator[bytes]

CODE_SYSTEM_PROMPT = (
    "You are an expert {language} programmer. Write correct, idiomatic, complete code for the task. "
    "Put the code in one fenced code block (```{fence}), followed by at most a short explanation."
)
ANALYSIS_SYSTEM_PROMPT = "You analyze text and answer only with a JSON object that follows the given schema."

_CODE_BLOCK = re.compile(r"```([A-Za-z0-9_+#.\-]*)[ \t]*\n(.*?)```", re.DOTALL)


CallKind = Literal["generate", "chat", "code", "analyze"]


@dataclass(frozen=True)
class PreparedCall:
    kind: CallKind
    model_name: str
    model: ModelConfig
    request: CompletionRequest
    json_schema: dict[str, Any] | None = None


async def _prepare(
    gateway: Gateway,
    kind: CallKind,
    body: SamplingFields,
    messages: list[Message],
    *,
    capability: str = "chat",
    prompt_field: str = "messages",
    json_schema: dict[str, Any] | None = None,
) -> PreparedCall:
    name, model = gateway.resolve(body.model, capability)
    request = await gateway.build_request(
        model,
        messages,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop or (),
        seed=body.seed,
        json_schema=json_schema,
        prompt_field=prompt_field,
    )
    return PreparedCall(kind, name, model, request, json_schema)


async def prepare_generate(gateway: Gateway, body: GenerateRequest) -> PreparedCall:
    return await _prepare(gateway, "generate", body, [Message("user", body.prompt)], prompt_field="prompt")


async def prepare_chat(gateway: Gateway, body: ChatRequest) -> PreparedCall:
    messages = [Message(m.role, m.content) for m in body.messages]
    return await _prepare(gateway, "chat", body, messages)


async def prepare_code(gateway: Gateway, body: CodeRequest) -> PreparedCall:
    language = body.language or "software"
    system = CODE_SYSTEM_PROMPT.format(language=language, fence=(body.language or "").lower())
    task = body.task if not body.context else f"{body.task}\n\nContext:\n{body.context}"
    return await _prepare(
        gateway,
        "code",
        body,
        [Message("system", system), Message("user", task)],
        capability="code",
        prompt_field="task",
    )


def analysis_schema(body: AnalyzeRequest) -> dict[str, Any]:
    confidence = {"type": "number", "minimum": 0, "maximum": 1}
    match body.analysis_type:
        case "summary":
            return {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
        case "sentiment":
            return {
                "type": "object",
                "properties": {
                    "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral", "mixed"]},
                    "confidence": confidence,
                },
                "required": ["sentiment"],
            }
        case "classification":
            if not body.labels:
                raise ValidationFailed.of(
                    "labels",
                    "required for classification",
                    type="missing",
                    summary="classification needs labels to choose from",
                )
            return {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": body.labels}, "confidence": confidence},
                "required": ["label"],
            }
        case "extraction":
            if body.json_schema is None:
                raise ValidationFailed.of(
                    "schema",
                    "required for extraction",
                    type="missing",
                    summary="extraction needs the JSON schema of what to extract",
                )
            try:
                jsonschema.Draft202012Validator.check_schema(body.json_schema)
            except jsonschema.SchemaError as exc:
                raise ValidationFailed.of(
                    "schema", exc.message, summary=f"schema is not a valid JSON schema: {exc.message}"
                ) from None
            return body.json_schema
        case "review":
            return {
                "type": "object",
                "properties": {
                    "summary": {"type": "string"},
                    "issues": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "severity": {"type": "string", "enum": ["low", "medium", "high"]},
                                "description": {"type": "string"},
                            },
                            "required": ["severity", "description"],
                        },
                    },
                },
                "required": ["summary", "issues"],
            }


async def prepare_analyze(gateway: Gateway, body: AnalyzeRequest) -> PreparedCall:
    schema = analysis_schema(body)
    instruction = {
        "summary": "Summarize the text.",
        "sentiment": "Classify the sentiment of the text.",
        "classification": f"Classify the text as one of: {', '.join(body.labels or [])}.",
        "extraction": "Extract the requested fields from the text.",
        "review": "Review the text (or code): list concrete issues with a severity, and summarize.",
    }[body.analysis_type]
    user = f"{instruction}\nAnswer with JSON matching this schema: {json.dumps(schema)}\n\nText:\n{body.content}"
    return await _prepare(
        gateway,
        "analyze",
        body,
        [Message("system", ANALYSIS_SYSTEM_PROMPT), Message("user", user)],
        capability="chat",
        prompt_field="content",
        json_schema=schema,
    )


async def run(gateway: Gateway, ctx: CallContext, call: PreparedCall) -> GenerationOut:
    return as_generation(await gateway.complete(ctx, call.model_name, call.model, call.request))


def as_generation(result: GatewayResult) -> GenerationOut:
    usage = result.completion.usage
    return GenerationOut(
        response=result.completion.text,
        model=result.served_model,
        requested_model=result.requested_model,
        provider=result.provider,
        tokens_used=usage.total_tokens,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        response_time=round(result.latency_seconds, 6),
        finish_reason=result.completion.finish_reason,
        cached=result.cached,
        fallback_from=result.fallback_from,
    )


def extract_code_blocks(text: str) -> list[dict[str, str | None]]:
    return [{"language": lang or None, "code": code.rstrip("\n")} for lang, code in _CODE_BLOCK.findall(text)]


def as_code(out: GenerationOut, language: str | None) -> CodeOut:
    return CodeOut(**out.model_dump(), language=language, code_blocks=extract_code_blocks(out.response))


def as_analysis(out: GenerationOut, body: AnalyzeRequest, call: PreparedCall) -> AnalyzeOut:
    """The parsed result. The gateway has validated a finished answer already (``structured``); one
    cut short by ``max_tokens`` has no result and says ``length``."""
    if out.finish_reason == "length":
        return AnalyzeOut(**out.model_dump(), analysis_type=body.analysis_type, result=None)
    try:
        result = json.loads(out.response)
    except ValueError:
        raise BadGateway(
            "The model's answer is not valid JSON", details={"output": out.response[:2000], "model": out.model}
        ) from None
    if call.json_schema is not None:
        errors = sorted(jsonschema.Draft202012Validator(call.json_schema).iter_errors(result), key=str)
        if errors:
            raise BadGateway(
                "The model's answer does not match the schema",
                details={"output": result, "errors": [e.message for e in errors[:10]], "model": out.model},
            )
    return AnalyzeOut(**out.model_dump(), analysis_type=body.analysis_type, result=result)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


StreamEventName = Literal["delta", "done", "error"]


async def stream_events(
    gateway: Gateway, ctx: CallContext, call: PreparedCall
) -> AsyncGenerator[tuple[StreamEventName, dict[str, Any]], None]:
    """A streamed call as events, for every streaming door: ``("delta", {"text"})`` per chunk, then
    ``("done", <the non-streamed data>)`` or ``("error", <the envelope's error>)`` (never a silent
    cut). Closing the iterator (the client went away) closes the model's stream, which stops it."""
    import time

    started = time.perf_counter()
    outcome = StreamOutcome()
    stream = gateway.stream(ctx, call.model_name, call.model, call.request, outcome)
    try:
        async for chunk in stream:
            if chunk.delta:
                yield "delta", {"text": chunk.delta}
    except TrellisError as exc:
        yield "error", {"code": exc.code, "message": exc.message, "details": exc.details}
        return
    except Exception as exc:  # noqa: BLE001 - the client learns the stream failed, not why internally
        message = getattr(exc, "message", None) or "The model stream failed"
        yield "error", {"code": "upstream_error", "message": str(message), "details": {}}
        return
    finally:
        await stream.aclose()
    yield "done", as_streamed_generation(call, outcome, time.perf_counter() - started).model_dump()


def as_streamed_generation(call: PreparedCall, outcome: StreamOutcome, seconds: float) -> GenerationOut:
    """What a finished stream adds up to: the same data a non-streamed call answers."""
    usage = outcome.usage
    return GenerationOut(
        response="".join(outcome.text_parts),
        model=outcome.served_model,
        requested_model=call.model_name,
        provider=outcome.provider,
        tokens_used=usage.total_tokens if usage else 0,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        response_time=round(seconds, 6),
        finish_reason=outcome.finish_reason or "stop",
        cached=False,
        fallback_from=call.model_name if outcome.served_model != call.model_name else None,
    )


async def sse_events(
    gateway: Gateway, ctx: CallContext, call: PreparedCall, is_disconnected: Callable[[], Awaitable[bool]] | None = None
) -> EventStream:
    """``delta`` events, then ``done`` (the non-streamed data) or ``error`` (never a silent cut)."""
    async with contextlib.aclosing(stream_events(gateway, ctx, call)) as events:
        async for name, data in events:
            yield _event(name, data)


async def list_models(gateway: Gateway) -> list[ModelOut]:
    out = []
    for name, model in sorted(gateway.models.items()):
        state = await gateway.breaker_state(model)
        out.append(
            ModelOut(
                name=name,
                provider=model.provider,
                model_id=model.model_id,
                aliases=model.aliases,
                capabilities=list(model.capabilities),
                context_window=model.context_window,
                max_output_tokens=model.max_output_tokens,
                price_per_1k_input=model.price_per_1k_input,
                price_per_1k_output=model.price_per_1k_output,
                fallbacks=model.fallbacks,
                healthy=state == "closed" and model.provider in gateway.providers.names,
                breaker=state,
            )
        )
    return out
