"""The response cache: L1 in-process (LRU with TTL), L2 Redis when configured.

Only deterministic requests are cached (temperature 0, or when the caller asks). The key is a hash
of the normalized request and, unless sharing is configured, of the user: one user's prompts are
never answered from another user's cache entry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from cachetools import TTLCache
from redis.asyncio import Redis
from redis.exceptions import RedisError

from trellis.gateway.types import Completion, CompletionRequest, Usage
from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger

log = get_logger(__name__)


def cache_key(model_name: str, request: CompletionRequest, scope: str) -> str:
    normalized: dict[str, Any] = {
        "model": model_name,
        "messages": [[m.role, m.content] for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "seed": request.seed,
        "json_schema": request.json_schema,
        "json_object": request.json_object,
        "scope": scope,
    }
    encoded = json.dumps(normalized, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def _dump(completion: Completion) -> str:
    return json.dumps(asdict(completion))


def _load(raw: str | bytes) -> Completion:
    data = json.loads(raw)
    return Completion(text=data["text"], finish_reason=data["finish_reason"], usage=Usage(**data["usage"]))


class ResponseCache:
    def __init__(
        self,
        clock: Clock,
        *,
        ttl_seconds: float,
        max_entries: int,
        redis: Redis | None = None,
        redis_prefix: str = "trellis:cache:",
    ) -> None:
        self._l1: TTLCache[str, Completion] = TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=clock.monotonic)
        self._ttl = ttl_seconds
        self._redis = redis
        self._prefix = redis_prefix

    async def get(self, key: str) -> tuple[Completion, str] | None:
        """The cached completion and the level that had it (``l1`` or ``l2``)."""
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
        completion = _load(raw)
        self._l1[key] = completion
        return completion, "l2"

    async def put(self, key: str, completion: Completion) -> None:
        self._l1[key] = completion
        if self._redis is None:
            return
        try:
            await self._redis.set(self._prefix + key, _dump(completion), px=int(self._ttl * 1000))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cache_l2_unavailable", error=type(exc).__name__)
