"""``ai.generate``, ``ai.chat``, ``ai.analyze``: model calls through the gateway, as the run's owner,
logged in the episodic log like any call (door ``workflow``). ``with:`` takes the same fields as the
REST door's body (``prompt`` / ``messages`` / ``content`` + ``analysis_type``, ``model``,
``max_tokens``, ``temperature``, ...); the output is the REST door's ``data``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError

from trellis.gateway import tasks
from trellis.gateway.schemas import AnalyzeRequest, ChatRequest, GenerateRequest, SamplingFields
from trellis.gateway.service import CallContext
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


class GenerateStep:
    name: ClassVar[str] = "ai.generate"
    Config: ClassVar[type[StepConfig]] = GenerateConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Generate text from a prompt through the gateway."

    async def run(self, ctx: StepContext, config: GenerateConfig) -> Any:
        gateway = ctx.services.gateway
        try:
            body = _body(GenerateRequest, config)
            out = await tasks.run(
                gateway, _call_context(ctx, config.cache), await tasks.prepare_generate(gateway, body)
            )
        except TrellisError as exc:
            raise failed_from(exc) from None
        return out.model_dump()


class ChatStep:
    name: ClassVar[str] = "ai.chat"
    Config: ClassVar[type[StepConfig]] = ChatConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Chat with a model through the gateway."

    async def run(self, ctx: StepContext, config: ChatConfig) -> Any:
        gateway = ctx.services.gateway
        try:
            body = _body(ChatRequest, config)
            out = await tasks.run(gateway, _call_context(ctx, config.cache), await tasks.prepare_chat(gateway, body))
        except TrellisError as exc:
            raise failed_from(exc) from None
        return out.model_dump()


class AnalyzeStep:
    name: ClassVar[str] = "ai.analyze"
    Config: ClassVar[type[StepConfig]] = AnalyzeConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Structured analysis (sentiment, classification, extraction, ...) through the gateway."

    async def run(self, ctx: StepContext, config: AnalyzeConfig) -> Any:
        gateway = ctx.services.gateway
        try:
            body = _body(AnalyzeRequest, config)
            prepared = await tasks.prepare_analyze(gateway, body)
            out = await tasks.run(gateway, _call_context(ctx, config.cache), prepared)
            return tasks.as_analysis(out, body, prepared).model_dump()
        except TrellisError as exc:
            raise failed_from(exc) from None
