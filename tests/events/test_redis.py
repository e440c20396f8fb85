"""What only the Redis bus has: replicas sharing one Redis, one pub/sub connection per process, and
Redis going away and coming back (gaps, degraded health, local delivery meanwhile).

"Redis restarts" are played without touching the machine's shared Redis: ``CLIENT KILL`` of the
bus's own pub/sub connection, or a TCP proxy in front of Redis that the test cuts and restores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL
from tests.events.conftest import (
    kill_bus_connections,
    next_gap,
    next_item,
    redis_bus,
    running,
    until_connected,
    until_state,
)
from tests.tcp_proxy import TcpProxy, tcp_proxy
from trellis.events.base import Delivery, message
from trellis.events.redis import RedisEventBus


def msg(**data: object) -> dict[str, object]:
    return message("update", "workflow", "workflow_execution_progress", data, "2026-12-03T10:00:00.000Z")


@pytest.fixture
async def replicas(redis_admin: Redis, redis_prefix: str) -> AsyncIterator[tuple[RedisEventBus, RedisEventBus]]:
    """Two buses on one Redis and one prefix: two processes of one deployment."""
    a, b = redis_bus(redis_admin, redis_prefix), redis_bus(redis_admin, redis_prefix)
    async with running(a), running(b):
        yield a, b


async def test_a_subscriber_on_one_replica_sees_what_another_published(
    replicas: tuple[RedisEventBus, RedisEventBus],
) -> None:
    a, b = replicas
    async with b.subscribe() as on_b, a.subscribe() as on_a:
        await on_b.add("user:u")
        await on_a.add("user:u")
        assert await a.publish("user:u", msg(by="a")) == 1
        assert await b.publish("user:u", msg(by="b")) == 2  # one id sequence per topic across replicas
        for sub in (on_a, on_b):
            got = [await next_item(sub) for _ in range(2)]
            assert [(g.id, g.message()["data"]["by"]) for g in got if isinstance(g, Delivery)] == [(1, "a"), (2, "b")]
        assert await b.last_id("user:u") == 2


async def test_one_pubsub_connection_per_process_subscribed_while_someone_listens(
    redis_admin: Redis, redis_prefix: str
) -> None:
    bus = redis_bus(redis_admin, redis_prefix)
    channel = f"{redis_prefix}events:run:r1"
    async with running(bus):
        subs = [bus.subscribe() for _ in range(3)]
        for sub in subs:
            await sub.add("run:r1")
            await sub.add(f"user:{id(sub)}")
        assert dict(await redis_admin.pubsub_numsub(channel)) == {channel.encode(): 1}
        named = [c for c in await redis_admin.client_list() if c.get("name") == bus.client_name]
        assert len(named) == 1  # one connection for every topic and subscriber of this process
        await subs[0].aclose()
        await subs[1].remove("run:r1")
        assert dict(await redis_admin.pubsub_numsub(channel)) == {channel.encode(): 1}
        await subs[2].aclose()  # the last one leaves: UNSUBSCRIBE
        await bus.publish("run:r1", msg(), id=1)  # a round trip after the UNSUBSCRIBE went out
        assert dict(await redis_admin.pubsub_numsub(channel)) == {channel.encode(): 0}
        await subs[1].aclose()


async def test_a_killed_connection_comes_back_and_subscribers_get_a_gap(
    replicas: tuple[RedisEventBus, RedisEventBus], redis_admin: Redis
) -> None:
    a, b = replicas
    async with b.subscribe() as sub:
        await sub.add("user:u")
        await sub.add("run:r")
        assert await kill_bus_connections(redis_admin, b) == 1
        # B notices, reconnects, subscribes again, and tells each followed topic it may have lost some.
        gaps = {(await next_gap(sub)).topic for _ in range(2)}
        assert gaps == {"user:u", "run:r"}
        await until_connected(b, connections=2)
        assert b.health().ok
        # And it hears A again.
        await a.publish("user:u", msg(after="reconnect"))
        got = await next_item(sub)
        assert isinstance(got, Delivery)
        assert got.message()["data"] == {"after": "reconnect"}


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    async with tcp_proxy(host, int(port)) as server:
        yield server


async def test_redis_away_is_reported_and_local_delivery_goes_on(
    proxy: TcpProxy, redis_admin: Redis, redis_prefix: str
) -> None:
    client = Redis.from_url(proxy.url(), socket_timeout=0.5, socket_connect_timeout=0.5)
    bus = redis_bus(client, redis_prefix, url=proxy.url(), timeout_seconds=0.5)
    other = redis_bus(redis_admin, redis_prefix)  # a replica that still reaches Redis
    try:
        async with running(bus), running(other), bus.subscribe() as sub:
            await sub.add("user:u")
            await sub.add("run:r")
            proxy.cut()
            await until_state(bus, "disconnected")
            health = bus.health()
            assert not health.ok
            assert health.state == "disconnected"
            assert "this process's subscribers only" in (health.detail or "")
            # Degraded, not silent and not dead: this process's own publications still arrive.
            assert await bus.publish("run:r", msg(seq=3), id=3) == 3
            local = await next_item(sub)
            assert isinstance(local, Delivery)
            assert local.id == 3
            assert await bus.publish("user:u", msg(n=1)) is None  # no id to give without Redis
            assert (await next_item(sub)).topic == "user:u"
            assert await bus.last_id("user:u") is None  # unknown, not 0
            # Meanwhile another replica publishes what this one cannot hear.
            await other.publish("user:u", msg(missed=True))

            proxy.restore()
            gaps = {(await next_gap(sub)).topic for _ in range(2)}
            assert gaps == {"user:u", "run:r"}
            assert bus.health().ok
            await other.publish("user:u", msg(back=True))
            back = await next_item(sub)
            assert isinstance(back, Delivery)
            assert back.message()["data"] == {"back": True}
            assert back.id == 2
    finally:
        await client.aclose()


async def test_a_bus_started_while_redis_is_away_connects_later(proxy: TcpProxy, redis_prefix: str) -> None:
    proxy.cut()
    client = Redis.from_url(proxy.url(), socket_timeout=0.5, socket_connect_timeout=0.5)
    bus = redis_bus(client, redis_prefix, url=proxy.url(), confirm_timeout_seconds=0.2)
    bus.start()
    try:
        sub = bus.subscribe()
        await sub.add("user:u")  # returns: degraded, not stuck
        assert not bus.health().ok
        proxy.restore()
        await until_connected(bus)
        assert (await next_gap(sub)).topic == "user:u"
        await bus.publish("user:u", msg(n=1))
        assert isinstance(await next_item(sub), Delivery)
        await sub.aclose()
    finally:
        await bus.close()
        await client.aclose()
