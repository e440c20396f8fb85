"""REST shapes of the gateway door (``/api/v1/ai/...``); the OpenAI door has its own in openai_api.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from trellis.kit.requests import RequestModel

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Temperature = Annotated[float, Field(ge=0, le=2)]
MaxTokens = Annotated[int, Field(gt=0)]


class SamplingFields(RequestModel):
    model: str | None = Field(default=None, description="A model name or alias; default: the local chat model.")
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    stop: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(default=None, max_length=4)
    seed: int | None = None
    # Strict: the schema says boolean, so "true" or 1 is a 400, not a stream.
    stream: Annotated[bool, Field(strict=True)] = False
    cache: Literal["auto", "bypass", "force"] = Field(
        default="auto", description="auto: cache deterministic requests; bypass: never; force: cache this one."
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ChatMessageIn(RequestModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateRequest(SamplingFields):
    prompt: NonEmpty


class ChatRequest(SamplingFields):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]

    @field_validator("messages")
    @classmethod
    def _has_content(cls, value: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if all(not m.content.strip() for m in value):
            raise ValueError("at least one message must have content")
        return value


class CodeRequest(SamplingFields):
    task: NonEmpty
    language: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None
    context: str | None = None


AnalysisType = Literal["summary", "sentiment", "classification", "extraction", "review"]


class AnalyzeRequest(SamplingFields):
    content: NonEmpty
    analysis_type: AnalysisType
    labels: list[NonEmpty] | None = Field(default=None, description="Classification labels to choose from.")
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="For extraction: the JSON schema the result must satisfy."
    )


class GenerationOut(BaseModel):
    response: str
    model: str
    requested_model: str
    provider: str
    tokens_used: int
    prompt_tokens: int
    completion_tokens: int
    response_time: float
    finish_reason: str
    cached: bool
    fallback_from: str | None = None


class CodeOut(GenerationOut):
    language: str | None
    code_blocks: list[dict[str, str | None]]


class AnalyzeOut(GenerationOut):
    analysis_type: AnalysisType
    result: Any


class ModelOut(BaseModel):
    name: str
    provider: str
    model_id: str
    aliases: list[str]
    capabilities: list[str]
    context_window: int
    max_output_tokens: int
    price_per_1k_input: float
    price_per_1k_output: float
    fallbacks: list[str]
    healthy: bool
    breaker: str
