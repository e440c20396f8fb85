"""The gateway's caches: L1 in-process (LRU with TTL), L2 Redis when configured.

Two caches share the mechanism (``TieredCache``): ``ResponseCache`` for completions and
``EmbeddingCache`` for the vectors of single texts. Only deterministic requests are cached
(temperature 0, or when the caller asks; embeddings always are, unless the caller bypasses the
cache, as the context indexer does for documents it stores itself). The key is a hash of the
normalized request and, unless sharing is configured, of the user: one user's prompts are never
answered from another user's cache entry, and a cache hit never tells one user what another asked.
"""

from __future__ import annotations

import hashlib
import json
import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, Self, TypeVar

import numpy as np
from cachetools import TTLCache
from redis.asyncio import Redis
from redis.exceptions import RedisError

from trellis.gateway.types import Completion, CompletionRequest, ToolCall, Usage
from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger
from trellis.settings.gateway import GatewaySettings

log = get_logger(__name__)


def cache_key(model_name: str, request: CompletionRequest, scope: str) -> str:
    normalized: dict[str, Any] = {
        "model": model_name,
        "messages": [
            [m.role, m.content, [[c.id, c.name, c.arguments] for c in m.tool_calls], m.tool_call_id]
            for m in request.messages
        ],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "seed": request.seed,
        "json_schema": request.json_schema,
        "json_object": request.json_object,
        "tools": [[t.name, t.description, t.parameters] for t in request.tools],
        "tool_choice": request.tool_choice,
        "passthrough": request.passthrough,
        "scope": scope,
    }
    encoded = json.dumps(normalized, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


ValueT = TypeVar("ValueT")


class TieredCache(ABC, Generic[ValueT]):
    """L1: a bounded in-process map with a TTL. L2 (optional): Redis, shared by every replica, with
    the same TTL; an L2 hit is copied into L1. Redis errors are logged and count as misses. A
    subclass says how its values are written to Redis (``encode``/``decode``)."""

    def __init__(
        self,
        clock: Clock,
        *,
        ttl_seconds: float,
        max_entries: int,
        redis: Redis | None = None,
        redis_prefix: str = "trellis:cache:",
    ) -> None:
        self._l1: TTLCache[str, ValueT] = TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=clock.monotonic)
        self._ttl = ttl_seconds
        self._redis = redis
        self._prefix = redis_prefix

    @classmethod
    def from_settings(
        cls, tuning: GatewaySettings, clock: Clock, *, redis: Redis | None = None, redis_prefix: str = "trellis:cache:"
    ) -> Self:
        """Sized and timed by the gateway's cache settings (``cache_ttl_seconds``, ``cache_max_entries``)."""
        return cls(
            clock,
            ttl_seconds=tuning.cache_ttl_seconds,
            max_entries=tuning.cache_max_entries,
            redis=redis,
            redis_prefix=redis_prefix,
        )

    @abstractmethod
    def encode(self, value: ValueT) -> str | bytes: ...

    @abstractmethod
    def decode(self, raw: str | bytes) -> ValueT: ...

    async def get(self, key: str) -> tuple[ValueT, str] | None:
        """The cached value and the level that had it (``l1`` or ``l2``)."""
        hit = self._l1.get(key)
        if hit is not None:
            return hit, "l1"
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(self._prefix + key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cache_l2_unavailable", error=type(exc).__name__)
            return None
        if raw is None:
            return None
        value = self.decode(raw)
        self._l1[key] = value
        return value, "l2"

    async def put(self, key: str, value: ValueT) -> None:
        await self.put_many([(key, value)])

    async def put_many(self, items: Sequence[tuple[str, ValueT]]) -> None:
        """Store several entries; in Redis with one round trip (a pipeline), not one per entry."""
        for key, value in items:
            self._l1[key] = value
        if self._redis is None or not items:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self._prefix + key, self.encode(value), px=int(self._ttl * 1000))
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cache_l2_unavailable", error=type(exc).__name__)


class ResponseCache(TieredCache[Completion]):
    def encode(self, value: Completion) -> str:
        return json.dumps(asdict(value))

    def decode(self, raw: str | bytes) -> Completion:
        data = json.loads(raw)
        calls = tuple(ToolCall(**call) for call in data.get("tool_calls") or ())
        usage = Usage(**data["usage"])
        return Completion(text=data["text"], finish_reason=data["finish_reason"], usage=usage, tool_calls=calls)


# --- embeddings --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedEmbedding:
    """One text's vector (float32, as the models compute them) and the tokens it took."""

    vector: bytes  # little-endian float32: about an eighth of the memory of a list of Python floats
    tokens: int

    @classmethod
    def of(cls, vector: list[float], tokens: int) -> CachedEmbedding:
        return cls(np.asarray(vector, dtype="<f4").tobytes(), tokens)

    def floats(self) -> list[float]:
        values: list[float] = np.frombuffer(self.vector, dtype="<f4").tolist()
        return values


_TOKENS = struct.Struct("<I")  # in Redis: the token count, then the float32 vector


def embedding_key(model_name: str, text: str, scope: str) -> str:
    encoded = json.dumps(["embed", model_name, text, scope], separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


class EmbeddingCache(TieredCache[CachedEmbedding]):
    def encode(self, value: CachedEmbedding) -> bytes:
        return _TOKENS.pack(value.tokens) + value.vector

    def decode(self, raw: str | bytes) -> CachedEmbedding:
        # Trellis's Redis client returns bytes (it does not decode responses).
        data = raw.encode("latin-1") if isinstance(raw, str) else raw
        return CachedEmbedding(data[_TOKENS.size :], _TOKENS.unpack_from(data)[0])
