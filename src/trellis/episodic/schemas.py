"""What the gateway hands the log writer (``CallRecord``) and what the log API answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from trellis.kit.pagination import Page

# "indexer": embeddings the context store computes for semantic search (trellis.context.index.service).
# Which door a model call came through; the one definition (the gateway and every service take it).
Door = Literal["rest", "openai", "graphql", "cli", "workflow", "dspy", "indexer", "ws"]
CallStatus = Literal["ok", "error", "cancelled"]

DOORS: tuple[Door, ...] = ("rest", "openai", "graphql", "cli", "workflow", "dspy", "indexer", "ws")
CALL_STATUSES: tuple[CallStatus, ...] = ("ok", "error", "cancelled")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One model call, as the gateway saw it. Build it with keywords and pass it to
    ``EpisodicLogWriter.submit``; ``id`` and ``created_at`` are filled in at submit when absent."""

    owner_id: str
    door: Door
    requested_model: str
    status: CallStatus
    request_id: str | None = None
    # The model that answered (after aliases and fallbacks) and the provider that ran it.
    served_model: str | None = None
    provider: str | None = None
    # Text completion: the prompt. Chat: the messages, as [{"role": ..., "content": ...}, ...].
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    # Time to first token, for streamed calls.
    ttft_ms: float | None = None
    cost: float = 0.0
    cached: bool = False
    error: str | None = None
    finish_reason: str | None = None
    attempts: int = 1
    # The model that failed before the served one answered.
    fallback_from: str | None = None
    # The DSPy module that made the call (door "dspy"); None for every other call.
    module: str | None = None
    created_at: datetime | None = None
    id: str | None = None


class LogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    owner_id: str
    request_id: str | None
    door: str
    requested_model: str
    served_model: str | None
    provider: str | None
    prompt: str | None
    messages: list[dict[str, Any]] | None
    response: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    cost: float
    cached: bool
    status: str
    error: str | None
    finish_reason: str | None
    attempts: int
    fallback_from: str | None
    module: str | None = None


class LogPage(Page[LogOut]):
    pass


@dataclass(frozen=True, slots=True)
class LogFilters:
    """A validated query over the episodic log (the API parses, the service checks the rest)."""

    model: str | None = None
    status: CallStatus | None = None
    door: Door | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    user_id: str | None = None
    limit: int = 50
    cursor: str | None = None
