"""Redis-only behaviour: the server's clock, shared buckets, key layout, and Redis being down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL, delete_prefixed
from trellis.kit.clock import ManualClock
from trellis.kit.errors import Unavailable
from trellis.ratelimit.redis import RedisRateLimiter
from trellis.settings import RateRule

# One hour per 20 requests: an emission interval of 180 s, so nothing refills during a test.
LONG = RateRule(capacity=20, period_seconds=3600)
UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
async def clients(redis_prefix: str) -> AsyncIterator[list[Redis]]:
    """Three independent clients (three connection pools), like three API replicas."""
    made = [Redis.from_url(REDIS_URL) for _ in range(3)]
    try:
        yield made
    finally:
        try:
            await delete_prefixed(made[0], redis_prefix)
        finally:
            for client in made:
                await client.aclose()


async def test_server_time_capacity_is_exact_sequentially(clients: list[Redis], redis_prefix: str) -> None:
    limiter = RedisRateLimiter(clients[0], prefix=redis_prefix, fail_open=False, timeout_seconds=2.0)
    decisions = [await limiter.acquire("k", LONG, policy="default") for _ in range(LONG.capacity + 5)]
    assert [d.allowed for d in decisions] == [True] * LONG.capacity + [False] * 5
    assert [d.remaining for d in decisions[: LONG.capacity]] == list(range(LONG.capacity - 1, -1, -1))
    denied = decisions[-1]
    # Real time passes between calls, so only approximately one emission interval.
    assert 179.0 < denied.retry_after <= 180.0
    assert denied.headers()["Retry-After"] == "180"
    assert denied.headers()["RateLimit-Policy"] == '"default";q=20;w=3600'


async def test_server_time_capacity_is_exact_under_concurrency_across_clients(
    clients: list[Redis], redis_prefix: str
) -> None:
    """Three limiters on three pools (like replicas) share one bucket: exactly capacity pass."""
    limiters = [RedisRateLimiter(c, prefix=redis_prefix, fail_open=False, timeout_seconds=5.0) for c in clients]
    decisions = await asyncio.gather(*(limiters[i % 3].acquire("shared", LONG, policy="default") for i in range(150)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == LONG.capacity
    # Every cell was handed out exactly once.
    assert sorted(d.remaining for d in allowed) == list(range(LONG.capacity))


async def test_injected_clocks_are_shared_state_not_per_replica(clients: list[Redis], redis_prefix: str) -> None:
    """The bucket lives in Redis: a second limiter sees what the first one used."""
    clock = ManualClock()
    first = RedisRateLimiter(clients[0], prefix=redis_prefix, clock=clock, fail_open=False)
    second = RedisRateLimiter(clients[1], prefix=redis_prefix, clock=clock, fail_open=False)
    rule = RateRule(capacity=4, period_seconds=8)
    assert [(await first.acquire("k", rule, policy="default")).remaining for _ in range(3)] == [3, 2, 1]
    assert (await second.acquire("k", rule, policy="default")).remaining == 0
    assert not (await first.acquire("k", rule, policy="default")).allowed
    clock.advance(2)
    assert (await second.acquire("k", rule, policy="default")).allowed
    assert not (await first.acquire("k", rule, policy="default")).allowed


async def test_keys_live_under_the_prefix_and_expire(clients: list[Redis], redis_prefix: str) -> None:
    client = clients[0]
    limiter = RedisRateLimiter(client, prefix=redis_prefix, fail_open=False)
    rule = RateRule(capacity=10, period_seconds=60)
    for _ in range(3):
        await limiter.acquire("default:key:abc", rule, policy="default")
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
    assert keys == [f"{redis_prefix}default:key:abc".encode()]
    ttl_ms = await client.pttl(keys[0])
    # The key expires once the bucket would be full again (3 cells of 6 s), never lingers.
    assert 0 < ttl_ms <= 18_001


async def test_prefixes_isolate_deployments(clients: list[Redis], redis_prefix: str) -> None:
    clock = ManualClock()
    one = RedisRateLimiter(clients[0], prefix=f"{redis_prefix}one:", clock=clock, fail_open=False)
    two = RedisRateLimiter(clients[0], prefix=f"{redis_prefix}two:", clock=clock, fail_open=False)
    rule = RateRule(capacity=2, period_seconds=60)
    assert [(await one.acquire("k", rule, policy="default")).allowed for _ in range(3)] == [True, True, False]
    assert [(await two.acquire("k", rule, policy="default")).allowed for _ in range(3)] == [True, True, False]


async def test_unreachable_redis_fail_open_allows() -> None:
    client = Redis.from_url(UNREACHABLE, socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        limiter = RedisRateLimiter(client, fail_open=True, timeout_seconds=0.2)
        decision = await limiter.acquire("k", LONG, policy="default")
        assert decision.allowed
        assert decision.limit == LONG.capacity
        assert "Retry-After" not in decision.headers()
    finally:
        await client.aclose()


async def test_unreachable_redis_fail_closed_raises_unavailable() -> None:
    client = Redis.from_url(UNREACHABLE, socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        limiter = RedisRateLimiter(client, fail_open=False, timeout_seconds=0.2)
        with pytest.raises(Unavailable) as caught:
            await limiter.acquire("k", LONG, policy="default")
        assert caught.value.status_code == 503
        assert caught.value.code == "unavailable_error"
        assert caught.value.headers == {"Retry-After": "1"}
    finally:
        await client.aclose()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: Redis hanging, not refusing."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client goes away

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_hanging_redis_is_cut_off_by_the_timeout(silent_server: str, fail_open: bool) -> None:
    # The client's own socket timeout is generous: the limiter's timeout must be what cuts it off.
    client = Redis.from_url(silent_server, socket_timeout=30, socket_connect_timeout=30)
    try:
        limiter = RedisRateLimiter(client, fail_open=fail_open, timeout_seconds=0.1)
        started = asyncio.get_running_loop().time()
        if fail_open:
            assert (await limiter.acquire("k", LONG, policy="default")).allowed
        else:
            with pytest.raises(Unavailable):
                await limiter.acquire("k", LONG, policy="default")
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await client.aclose()
