"""Shapes of the OpenAI-compatible door (``/v1``): OpenAI's request fields (unknown ones ignored, as
OpenAI clients send many), and the response shapes the OpenAPI document describes. The handlers
build the responses as plain dicts on the hot path; these models are what they promise
(``tests/gateway/test_openai_shapes.py`` validates real answers against the document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator


class OAIMessage(BaseModel):
    # OpenAI clients send fields Trellis does not use (name, tool_call_id, ...): kept, not refused.
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class CommonFields(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    model: Annotated[str, StringConstraints(min_length=1)]
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    max_completion_tokens: Annotated[int, Field(gt=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(CommonFields):
    messages: Annotated[list[OAIMessage], Field(min_length=1)]
    response_format: ResponseFormat | None = None


class CompletionRequestIn(CommonFields):
    prompt: Annotated[str, StringConstraints(min_length=1)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    model: Annotated[str, StringConstraints(min_length=1)]
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    # The official SDKs ask for base64 unless told otherwise.
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if any(not t for t in texts):
            raise ValueError("input strings must not be empty")
        return value


# --- responses ------------------------------------------------------------------------------------


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason


class TextCompletionOut(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: UsageOut


class EmbeddingOut(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 when asked.")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsOut(BaseModel):
    object: Literal["list"]
    model: str
    data: list[EmbeddingOut]
    usage: EmbeddingUsage
