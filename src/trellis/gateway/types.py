"""Provider-neutral request and response shapes every provider speaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error", "cancelled"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A chat completion request (``messages``) as providers receive it.

    Text completion (``/generate``, ``/v1/completions``) is sent as a single user message, so each
    provider implements one path.
    """

    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # A JSON schema the output must satisfy (constrained decoding where the provider can).
    json_schema: dict[str, Any] | None = None
    # True when only "some JSON object" is required (OpenAI's json_object).
    json_object: bool = False
    # The prompt's size as counted during validation; logged when a stream ends before its usage.
    counted_prompt_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed completion. The last chunk carries ``finish_reason`` and ``usage``."""

    delta: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int
    dimensions: int = field(default=0)
