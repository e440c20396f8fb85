"""The gateway's caches on their own: the embedding entries' round trip through a real Redis, L1 expiry
on the injected clock, and Redis being unreachable (a miss and a warning, never an error)."""

from __future__ import annotations

import numpy as np
from redis.asyncio import Redis

from trellis.gateway.cache import CachedEmbedding, EmbeddingCache, embedding_key
from trellis.kit.clock import ManualClock

VECTOR = [0.1, -0.25, 3.0e-7, 1.0]


def cache(clock: ManualClock, redis: Redis | None = None, prefix: str = "trellis-test:") -> EmbeddingCache:
    return EmbeddingCache(clock, ttl_seconds=60, max_entries=10, redis=redis, redis_prefix=prefix)


def test_an_entry_keeps_the_float32_vector_and_its_tokens() -> None:
    entry = CachedEmbedding.of(VECTOR, 7)
    assert entry.floats() == np.asarray(VECTOR, dtype=np.float32).tolist()
    assert entry.tokens == 7


def test_keys_differ_by_model_text_and_scope() -> None:
    base = embedding_key("minilm", "text", "usr_a")
    assert len({base, embedding_key("other", "text", "usr_a"), embedding_key("minilm", "text ", "usr_a")}) == 3
    assert embedding_key("minilm", "text", "usr_b") != base
    assert embedding_key("minilm", "text", "usr_a") == base


async def test_another_instance_reads_the_entry_from_redis(redis_client: Redis, redis_prefix: str) -> None:
    clock = ManualClock()
    writer, reader = cache(clock, redis_client, redis_prefix), cache(clock, redis_client, redis_prefix)
    await writer.put("k", CachedEmbedding.of(VECTOR, 3))

    hit = await reader.get("k")
    assert hit is not None
    entry, level = hit
    assert level == "l2"
    assert entry.floats() == CachedEmbedding.of(VECTOR, 3).floats()
    assert entry.tokens == 3
    assert (await reader.get("k")) == (entry, "l1")  # copied into the reader's L1
    assert await redis_client.pttl(f"{redis_prefix}k") > 59_000  # the cache's TTL, in Redis too


async def test_l1_entries_expire_on_the_clock() -> None:
    clock = ManualClock()
    local = cache(clock)
    await local.put("k", CachedEmbedding.of(VECTOR, 1))
    clock.advance(59)
    assert await local.get("k") is not None
    clock.advance(2)
    assert await local.get("k") is None


async def test_unreachable_redis_is_a_miss_not_an_error() -> None:
    # Port 1: nothing listens, connections are refused at once. Built as the runtime builds its client.
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        clock = ManualClock()
        local = cache(clock, dead)
        assert await local.get("missing") is None
        await local.put("k", CachedEmbedding.of(VECTOR, 2))  # L2 fails, L1 keeps it
        hit = await local.get("k")
        assert hit is not None
        assert hit[1] == "l1"
    finally:
        await dead.aclose()
