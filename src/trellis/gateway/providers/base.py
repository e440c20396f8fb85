"""The provider contract: what a model backend must do for the gateway.

A provider is created once per process by its factory and serves every model configured with its
name. It raises only ``trellis.gateway.errors`` exceptions; the gateway owns retries, breakers,
fallbacks, caching and logging, so providers stay small.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from trellis.gateway.types import Completion, CompletionRequest, EmbeddingResult, Message, StreamChunk, ToolSpec
from trellis.settings import Settings
from trellis.settings.gateway import ModelConfig


class Provider(Protocol):
    name: str

    async def complete(self, model: ModelConfig, request: CompletionRequest) -> Completion:
        """One whole completion."""
        ...

    def stream(self, model: ModelConfig, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        """Chunks as they are generated. Closing the iterator early cancels the generation."""
        ...

    async def embed(self, model: ModelConfig, texts: Sequence[str]) -> EmbeddingResult:
        """One vector per text, in order."""
        ...

    async def count_tokens(
        self,
        model: ModelConfig,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str = "auto",
    ) -> int | None:
        """Prompt tokens as the model will see them (with the functions it is offered), or None when
        the provider cannot tell."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ProviderContext:
    settings: Settings


ProviderFactory = Callable[[ProviderContext], Provider]
