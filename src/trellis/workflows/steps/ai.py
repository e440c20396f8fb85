"""``ai.generate``, ``ai.chat``, ``ai.analyze``: model calls through the gateway, as the run's owner,
logged in the episodic log like any call (door ``workflow``). ``with:`` takes the same fields as the
REST door's body (``prompt`` / ``messages`` / ``content`` + ``analysis_type``, ``model``,
``max_tokens``, ``temperature``, ...); the output is the REST door's ``data``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError

from trellis.auth.schemas import Scope
from trellis.gateway import tasks
from trellis.gateway.schemas import AnalyzeRequest, ChatRequest, GenerateRequest, GenerationOut, SamplingFields
from trellis.gateway.service import CallContext, Gateway
from trellis.kit.errors import TrellisError
from trellis.workflows.steps.base import StepConfig, StepContext, StepFailed, failed_from


class _Sampling(StepConfig):
    model: str | None = None
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    seed: int | None = None
    cache: Literal["auto", "bypass", "force"] = "auto"


class GenerateConfig(_Sampling):
    prompt: Annotated[str, Field(min_length=1)]


class ChatConfig(_Sampling):
    messages: Annotated[list[dict[str, str]], Field(min_length=1)]


class AnalyzeConfig(_Sampling):
    content: Annotated[str, Field(min_length=1)]
    analysis_type: str
    labels: list[str] | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")


def _call_context(ctx: StepContext, cache: tasks.CacheMode) -> CallContext:
    return CallContext(principal=ctx.owner, door="workflow", request_id=f"{ctx.run_id}:{ctx.step_id}", cache=cache)


def _body(model: type[SamplingFields], config: StepConfig) -> Any:
    try:
        return model.model_validate(config.model_dump(by_alias=True, exclude_none=True))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StepFailed(f"with.{where}: {first['msg']}", retryable=False) from None


async def _call(
    ctx: StepContext,
    config: _Sampling,
    request: type[SamplingFields],
    prepare: Callable[[Gateway, Any], Awaitable[Any]],
) -> tuple[Any, Any, GenerationOut]:
    """(request body, prepared call, answer) of one model call as the run's owner."""
    if Scope.AI not in ctx.owner.scopes:
        raise StepFailed("the credential that started this run has no 'ai' scope", retryable=False)
    body = _body(request, config)
    gateway = ctx.services.gateway
    try:
        prepared = await prepare(gateway, body)
        return body, prepared, await tasks.run(gateway, _call_context(ctx, config.cache), prepared)
    except TrellisError as exc:
        raise failed_from(exc) from None


class GenerateStep:
    name: ClassVar[str] = "ai.generate"
    Config: ClassVar[type[StepConfig]] = GenerateConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Generate text from a prompt through the gateway."

    async def run(self, ctx: StepContext, config: GenerateConfig) -> Any:
        _, _, out = await _call(ctx, config, GenerateRequest, tasks.prepare_generate)
        return out.model_dump()


class ChatStep:
    name: ClassVar[str] = "ai.chat"
    Config: ClassVar[type[StepConfig]] = ChatConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Chat with a model through the gateway."

    async def run(self, ctx: StepContext, config: ChatConfig) -> Any:
        _, _, out = await _call(ctx, config, ChatRequest, tasks.prepare_chat)
        return out.model_dump()


class AnalyzeStep:
    name: ClassVar[str] = "ai.analyze"
    Config: ClassVar[type[StepConfig]] = AnalyzeConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Structured analysis (sentiment, classification, extraction, ...) through the gateway."

    async def run(self, ctx: StepContext, config: AnalyzeConfig) -> Any:
        body, prepared, out = await _call(ctx, config, AnalyzeRequest, tasks.prepare_analyze)
        try:
            return tasks.as_analysis(out, body, prepared).model_dump()
        except TrellisError as exc:
            raise failed_from(exc) from None
