"""DSPy's LM engine over the gateway service: DSPy 3.4's engine interface, in process.

DSPy 3.4 moved custom LMs from subclassing ``BaseLM.forward`` (deprecated, removed in 3.5) to
engines: an object with ``complete(Request) -> Response`` and ``stream(Request)``, and an async
twin, handed to ``dspy.LM(..., engine=, async_engine=)``. Here both call ``Gateway.complete`` /
``Gateway.stream`` directly, so a module's model calls get what every other door's get: the
model's limits checked, the caller's ``ai`` rate budget spent, the response cache (per user),
retries, breakers and fallbacks, and a row in the episodic log with door ``dspy``, the caller,
the tokens and the module's name.

Who is calling is not a property of the LM: one LM per model serves every user. Each call reads
the caller from DSPy's own context (``dspy.context(trellis_call=CallIdentity(...))``), which DSPy
carries into its worker threads (``Parallel``, ``Evaluate``, the optimizers). A call without one
is refused, never made as somebody else.

The async engine runs on the server's event loop. The sync engine (what DSPy uses when a module
is called without ``await``: the optimizers, in a worker thread) hands each call to that loop and
waits; calling it on the loop's own thread would deadlock and is refused.

DSPy's native function calling goes through: a request's function tools and tool choice become the
gateway's, assistant turns with calls and tool turns with results are carried both ways, and the
model's calls come back as ``ToolCallPart`` s (streamed as tool-call deltas), which DSPy's adapters
turn into ``dspy.ToolCalls``.

DSPy's response cache is off for these LMs (``cache=False``): its key ignores where a call goes
and whose it is, while the gateway's cache is per model and per user.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import dspy
from dspy.lm15 import (
    FunctionTool,
    Request,
    Response,
    StreamDeltaEvent,
    StreamEndEvent,
    StreamStartEvent,
    TextDelta,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from dspy.lm15 import (
    Message as LMMessage,
)
from dspy.lm15 import (
    ToolCallDelta as LMToolCallDelta,
)
from dspy.lm15 import (
    ToolChoice as LMToolChoice,
)
from dspy.lm15 import (
    Usage as LMUsage,
)

from trellis.auth.schemas import Principal
from trellis.gateway.service import CallContext, Gateway, InvalidModelOutput, StreamOutcome
from trellis.gateway.types import Completion, CompletionRequest, Message, Role, ToolCall, ToolSpec
from trellis.kit.errors import AuthenticationFailed, TrellisError, ValidationFailed

# What a canonical request's config may carry that the gateway honours; anything else set is a 400.
_HONOURED = {"max_tokens", "temperature", "top_p", "stop", "seed", "response_format"}
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_call", "error": "error", "cancelled": "error"}
MODEL_PREFIX = "trellis/"
IDENTITY_KEY = "trellis_call"
# dspy.lm15's StreamStartEvent | StreamDeltaEvent | StreamEndEvent | StreamErrorEvent (not exported).
StreamEvent = Any

Admit = Callable[["CallIdentity"], Awaitable[None]]


class BudgetSpent(TrellisError):
    code = "budget_exhausted_error"
    status_code = 409
    default_message = "The optimization run used up its model-call budget"


class CallGuard:
    """One optimization run's model calls: a budget (``max_calls``), and the first failure that
    must end the run (an open breaker, an empty rate budget, a provider down).

    DSPy's optimizers and evaluators catch what a call raises and go on (a failed example scores
    0): a breaker that opens half-way would silently turn the rest of the run into zeros and a
    "result". The engine reports each gateway failure here; once one is recorded, every later call
    is refused with it, and the run checks ``raise_if_failed`` between phases. An answer that
    breaks the output structure is not such a failure: that example just scores 0. Used on the
    event loop's thread only (the sync engine runs its calls there too)."""

    def __init__(self, max_calls: int | None = None) -> None:
        self.max_calls = max_calls
        self.calls = 0
        self.failure: TrellisError | None = None

    def admit(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self.max_calls is not None and self.calls >= self.max_calls:
            self.failure = BudgetSpent(
                f"The run used its {self.max_calls} model calls", details={"max_model_calls": self.max_calls}
            )
            raise self.failure
        self.calls += 1

    def failed(self, exc: BaseException) -> None:
        if self.failure is None and isinstance(exc, TrellisError) and not isinstance(exc, InvalidModelOutput):
            self.failure = exc

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure


@dataclass(frozen=True)
class CallIdentity:
    """Whose call it is and where it comes from: set per call with ``dspy.context``."""

    principal: Principal
    module: str
    request_id: str | None = None
    # True inside an optimization run: an empty rate budget is waited for instead of refused.
    patient: bool = False
    # Inside an optimization run: its budget and its first fatal failure (see CallGuard).
    guard: CallGuard | None = None


def current_identity() -> CallIdentity:
    identity = dspy.settings.get(IDENTITY_KEY)
    if not isinstance(identity, CallIdentity):
        raise AuthenticationFailed("A DSPy call through Trellis needs the caller: run it inside dspy.context")
    return identity


def _text_of(message: LMMessage) -> str:
    text = message.text
    if not isinstance(text, str):
        raise ValidationFailed.of(
            "messages", "only text parts are supported", type="unsupported_content", summary="Only text messages"
        )
    return text


def _assistant_message(message: LMMessage) -> Message:
    """An assistant turn, with the function calls it made (DSPy's native function calling)."""
    calls = tuple(
        ToolCall(part.id, part.name, json.dumps(part.input, ensure_ascii=False))
        for part in message.parts
        if isinstance(part, ToolCallPart)
    )
    if not calls:
        return Message("assistant", _text_of(message))
    text = "".join(part.text for part in message.parts if isinstance(part, TextPart))
    return Message("assistant", text, tool_calls=calls)


def _tool_messages(message: LMMessage) -> list[Message]:
    """A tool turn: one gateway message per function result, tied to its call's id."""
    answers: list[Message] = []
    for part in message.parts:
        if not isinstance(part, ToolResultPart):
            raise ValidationFailed.of("messages", "a tool turn holds function results only", type="unsupported_content")
        text = "".join(getattr(piece, "text", "") or "" for piece in part.content)
        answers.append(Message("tool", text, tool_call_id=part.id))
    return answers


def _tools(request: Request) -> tuple[tuple[ToolSpec, ...], str]:
    """DSPy's function tools and its tool choice as the gateway takes them ("auto", "required",
    "none" or the one function's name); anything else (a provider's built-in tool) is a 400."""
    specs: list[ToolSpec] = []
    for tool in request.tools:
        if not isinstance(tool, FunctionTool):
            raise ValidationFailed.of("tools", f"{type(tool).__name__} is not a function tool", type="unsupported")
        specs.append(ToolSpec(tool.name, tool.description or "", dict(tool.parameters)))
    choice: LMToolChoice | None = request.config.tool_choice
    if choice is None:
        return tuple(specs), "auto"
    if choice.parallel is False:
        raise ValidationFailed.of("parallel_tool_calls", "not supported by the gateway", type="unsupported_parameter")
    if not choice.allowed:
        return tuple(specs), choice.mode
    if choice.mode == "required" and len(choice.allowed) == 1:
        return tuple(specs), choice.allowed[0]
    raise ValidationFailed.of(
        "tool_choice", "only one allowed function, with mode required, is supported", type="unsupported_parameter"
    )


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "".join(getattr(part, "text", "") or "" for part in system)


class AsyncGatewayEngine:
    """The async engine (``async_engine=``): one canonical DSPy request, one gateway call."""

    supports_function_calling = True
    supports_reasoning = False
    supports_response_schema = True
    supported_params = frozenset(
        {"temperature", "max_tokens", "top_p", "stop", "seed", "response_format", "tools", "tool_choice"}
    )

    def __init__(self, gateway: Gateway, model_name: str, admit: Admit) -> None:
        self._gateway = gateway
        self._name, self._model = gateway.resolve(model_name, "chat")
        self._admit = admit

    @property
    def model_name(self) -> str:
        return self._name

    def _messages(self, request: Request) -> list[Message]:
        messages: list[Message] = []
        if request.system is not None:
            messages.append(Message("system", _system_text(request.system)))
        for message in request.messages:
            role: Role
            if message.role == "assistant":
                messages.append(_assistant_message(message))
                continue
            if message.role == "tool":
                messages.extend(_tool_messages(message))
                continue
            if message.role == "user":
                role = message.role
            elif message.role == "developer":
                role = "system"
            else:
                raise ValidationFailed.of("messages", f"role {message.role!r} is not supported", type="role")
            messages.append(Message(role, _text_of(message)))
        return messages

    async def prepare(self, request: Request) -> tuple[CallIdentity, CompletionRequest]:
        tools, tool_choice = _tools(request)
        config = request.config
        for name in ("top_k", "reasoning", "cache", "frequency_penalty", "presence_penalty"):
            if getattr(config, name, None) is not None:
                raise ValidationFailed.of(name, "not supported by the gateway", type="unsupported_parameter")
        extensions = getattr(config, "extensions", None) or {}
        if extensions:
            unknown = sorted(extensions)[0]
            raise ValidationFailed.of(unknown, "not supported by the gateway", type="unsupported_parameter")
        json_schema: dict[str, Any] | None = None
        json_object = False
        fmt = config.response_format
        if fmt is not None:
            kind = fmt.get("type")
            if kind == "json_schema":
                # lm15's canonical form carries the schema at the top level; OpenAI's nests it.
                spec = fmt.get("json_schema") or fmt
                schema = spec.get("schema") if isinstance(spec, dict) else None
                json_schema = schema if isinstance(schema, dict) else None
                json_object = json_schema is None
            elif kind == "json_object":
                json_object = True
            elif kind != "text":
                raise ValidationFailed.of("response_format", f"type {kind!r} is not supported", type="unsupported")
        identity = current_identity()
        completion_request = await self._gateway.build_request(
            self._model,
            self._messages(request),
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            top_p=1.0 if config.top_p is None else config.top_p,
            stop=tuple(config.stop or ()),
            seed=config.seed,
            json_schema=json_schema,
            json_object=json_object,
            tools=tools,
            tool_choice=tool_choice,
        )
        if identity.guard is not None:
            identity.guard.admit()
        try:
            await self._admit(identity)
        except TrellisError as exc:
            if identity.guard is not None:
                identity.guard.failed(exc)
            raise
        return identity, completion_request

    def _context(self, identity: CallIdentity) -> CallContext:
        return CallContext(
            principal=identity.principal, door="dspy", request_id=identity.request_id, module=identity.module
        )

    async def complete(self, request: Request) -> Response:
        identity, completion_request = await self.prepare(request)
        try:
            result = await self._gateway.complete(self._context(identity), self._name, self._model, completion_request)
        except TrellisError as exc:
            if identity.guard is not None:
                identity.guard.failed(exc)
            raise
        return to_response(result.completion, result.served_model)

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        identity, completion_request = await self.prepare(request)
        outcome = StreamOutcome()
        yield StreamStartEvent(model=self._name)
        finish = "stop"
        usage: LMUsage | None = None
        # Each streamed function call is a part of the message after the text (if any), in order.
        parts: dict[str, int] = {}
        chunks = self._gateway.stream(self._context(identity), self._name, self._model, completion_request, outcome)
        try:
            async for chunk in chunks:
                if chunk.delta:
                    yield StreamDeltaEvent(TextDelta(chunk.delta, part_index=parts.setdefault("text", len(parts))))
                for call in chunk.tool_calls:
                    index = parts.setdefault(f"call {call.index}", len(parts))
                    yield StreamDeltaEvent(LMToolCallDelta(call.arguments, index, call.id, call.name))
                if chunk.finish_reason is not None:
                    finish = _FINISH.get(chunk.finish_reason, "error")
                    if chunk.usage is not None:
                        usage = LMUsage(
                            input_tokens=chunk.usage.prompt_tokens, output_tokens=chunk.usage.completion_tokens
                        )
        except TrellisError as exc:
            if identity.guard is not None:
                identity.guard.failed(exc)
            raise
        finally:
            await chunks.aclose()
        yield StreamEndEvent(finish_reason=finish, usage=usage or LMUsage())

    async def aclose(self) -> None:
        """Borrowed: the gateway belongs to the runtime."""


def to_response(completion: Completion, model: str) -> Response:
    usage = LMUsage(input_tokens=completion.usage.prompt_tokens, output_tokens=completion.usage.completion_tokens)
    parts: list[Any] = [TextPart(completion.text)] if completion.text or not completion.tool_calls else []
    # The gateway has validated each call's arguments against its function's schema (an object):
    # an answer that breaks it never reaches here (InvalidModelOutput), so they parse as they are.
    parts += [ToolCallPart(call.id, call.name, json.loads(call.arguments or "{}")) for call in completion.tool_calls]
    return Response(
        id=None,
        model=model,
        message=LMMessage.assistant(parts),
        finish_reason=_FINISH.get(completion.finish_reason, "error"),
        usage=usage,
    )


async def _next(events: AsyncGenerator[StreamEvent, None]) -> StreamEvent:
    return await anext(events)


class GatewayEngine:
    """The sync engine (``engine=``): the async engine's call, run on the server's loop and waited for."""

    supports_function_calling = AsyncGatewayEngine.supports_function_calling
    supports_reasoning = False
    supports_response_schema = True
    supported_params = AsyncGatewayEngine.supported_params

    def __init__(self, async_engine: AsyncGatewayEngine, loop: asyncio.AbstractEventLoop) -> None:
        self._async = async_engine
        self._loop = loop

    def _check_thread(self) -> None:
        if self._loop.is_closed():
            raise RuntimeError("the event loop this engine calls the gateway on is closed")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("a sync DSPy call on the event loop's thread would deadlock: use `await module.acall()`")

    def complete(self, request: Request) -> Response:
        self._check_thread()
        return asyncio.run_coroutine_threadsafe(self._async.complete(request), self._loop).result()

    def stream(self, request: Request) -> Iterator[StreamEvent]:
        self._check_thread()
        events = self._async.stream(request)
        agen = cast(AsyncGenerator[StreamEvent, None], events)
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(_next(agen), self._loop).result()
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                asyncio.run_coroutine_threadsafe(agen.aclose(), self._loop).result()

    def close(self) -> None:
        """Borrowed: the gateway belongs to the runtime."""


def gateway_lm(
    gateway: Gateway,
    model_name: str,
    admit: Admit,
    loop: asyncio.AbstractEventLoop,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> dspy.LM:
    """A ``dspy.LM`` whose calls go to the gateway model ``model_name`` (an alias resolves to its
    model). DSPy's retries are off (the gateway retries, with its breakers) and so is its cache."""
    async_engine = AsyncGatewayEngine(gateway, model_name, admit)
    return dspy.LM(
        f"{MODEL_PREFIX}{async_engine.model_name}",
        engine=GatewayEngine(async_engine, loop),
        async_engine=async_engine,
        cache=False,
        num_retries=0,
        temperature=temperature,
        max_tokens=max_tokens,
    )
