"""Shapes of the OpenAI-compatible door (``/v1``): OpenAI's request fields, and the response shapes
the OpenAPI document describes. The handlers build the responses as plain dicts on the hot path;
these models are what they promise (``tests/gateway/test_openai_shapes.py`` validates real answers
against the document).

No request field is silently dropped: fields Trellis honours are modelled; fields that change
nothing about the answer (``user``, ``metadata``, ...) are accepted; OpenAI fields Trellis cannot
honour are accepted only at their default value, and any other field is refused
(``unhonoured``: a 400 naming it, as OpenAI refuses an unrecognized argument)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    arguments: str


class ToolCallIn(BaseModel):
    """A function call of an earlier assistant turn, as the client sends the conversation back."""

    model_config = ConfigDict(extra="allow", strict=True)
    id: Annotated[str, StringConstraints(min_length=1)]
    type: Literal["function"] = "function"
    function: FunctionCallIn


class OAIMessage(BaseModel):
    # ``name`` (a participant's name) is accepted: it does not change what is asked.
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str | None = None
    description: str | None = None
    # Checked as a JSON schema by the door (a 400 naming response_format.json_schema.schema).
    json_schema: Any = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    # A JSON schema for the arguments (default: no arguments); checked by the door.
    parameters: Any = None
    strict: bool | None = None


class ToolIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: bool = False


# Fields that do not change the answer: accepted whatever their value.
INERT_FIELDS = frozenset({"user", "metadata", "safety_identifier", "prompt_cache_key", "service_tier"})
# OpenAI fields Trellis cannot honour, and the values that ask for nothing (so clients that send
# defaults explicitly still work). Anything else in them is a 400 naming the field.
DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "store": (None, False),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "web_search_options": (None,),
    "functions": (None, []),
    "function_call": (None,),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
}


class CommonFields(BaseModel):
    # Extra fields are kept so the door can refuse what it cannot honour (``unhonoured``).
    model_config = ConfigDict(extra="allow", strict=True)
    model: Annotated[str, StringConstraints(min_length=1)]
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    max_completion_tokens: Annotated[int, Field(gt=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    def unhonoured(self) -> tuple[str, str] | None:
        """The first field Trellis would have to drop, and why; None when it honours them all."""
        if self.n != 1:
            return "n", "Trellis answers one choice per request (n must be 1)"
        for key, value in (self.model_extra or {}).items():
            if key in INERT_FIELDS:
                continue
            if key in DEFAULT_ONLY:
                if not any(value == d and type(value) is type(d) for d in DEFAULT_ONLY[key]):
                    return key, f"Trellis cannot honour {key} (only its default value is accepted)"
                continue
            return key, f"Unrecognized request argument: {key}"
        return None

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(CommonFields):
    messages: Annotated[list[OAIMessage], Field(min_length=1)]
    response_format: ResponseFormat | None = None
    tools: list[ToolIn] | None = None
    # "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}: checked by the
    # door, so a bad value is a 400 naming tool_choice rather than each arm of a union.
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


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


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as JSON text; they validate against the function's schema.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


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
