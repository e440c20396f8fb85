"""Fixtures for the rate-limiter tests: both backends behind one interface, on real Redis.

``backend`` is parametrized over the in-process limiter and the Redis limiter; both get a
ManualClock, so refill is driven by the test, never by sleeping. Redis keys live under the
per-test ``redis_prefix`` and are deleted afterwards; the client is always closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL, delete_prefixed
from trellis.kit.clock import ManualClock
from trellis.ratelimit.base import RateLimiter
from trellis.ratelimit.memory import MemoryRateLimiter
from trellis.ratelimit.redis import RedisRateLimiter


@dataclass
class Backend:
    name: str
    limiter: RateLimiter
    clock: ManualClock


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Backend]:
    clock = ManualClock()
    if request.param == "memory":
        limiter = MemoryRateLimiter(clock=clock)
        try:
            yield Backend("memory", limiter, clock)
        finally:
            await limiter.close()
        return
    client = Redis.from_url(REDIS_URL)
    # fail_open=False: a Redis problem must fail the test, never pass as "allowed".
    redis_limiter = RedisRateLimiter(client, prefix=redis_prefix, clock=clock, fail_open=False, timeout_seconds=2.0)
    try:
        yield Backend("redis", redis_limiter, clock)
    finally:
        try:
            await redis_limiter.close()
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()
