"""Provider-neutral request and response shapes every provider speaks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "error", "cancelled"]
# "auto": the model chooses; "required": it must call one; "none": it must not; any other value is
# the name of the one function it must call.
ToolChoice = str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    # An assistant turn that called functions (its content may then be empty).
    tool_calls: tuple[ToolCall, ...] = ()
    # A tool turn: the id of the call it answers.
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: its JSON schema is what the arguments must satisfy."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


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
    # Functions the model may call, and whether/which it must (see ToolChoice).
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    # What the caller sent, forwarded unchanged to OpenAI-compatible upstreams (response_format,
    # tools, tool_choice, parallel_tool_calls); the fields above are what Trellis itself enforces.
    passthrough: dict[str, Any] = field(default_factory=dict)
    # The prompt's size as counted during validation; logged when a stream ends before its usage.
    counted_prompt_tokens: int | None = None

    @property
    def structured(self) -> bool:
        """The answer must be JSON (a schema, an object) or may be a validated function call."""
        return self.json_schema is not None or self.json_object or self.calls_tools

    @property
    def calls_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


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
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed function call, as OpenAI streams them: the first piece of call
    ``index`` carries its ``id`` and ``name``, the rest carry more ``arguments`` text."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed completion. The last chunk carries ``finish_reason`` and ``usage``."""

    delta: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int
    dimensions: int = field(default=0)


def join_tool_calls(parts: Sequence[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """Streamed function-call pieces put together, one call per index, in index order."""
    calls: dict[int, tuple[str, str, list[str]]] = {}
    for part in parts:
        ident, name, arguments = calls.get(part.index, ("", "", []))
        calls[part.index] = (part.id or ident, part.name or name, [*arguments, part.arguments])
    return tuple(ToolCall(i, n, "".join(a)) for _, (i, n, a) in sorted(calls.items()))
