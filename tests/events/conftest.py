"""Fixtures for the event-bus tests: both backends behind one interface, on the real Redis.

``bus`` is parametrized over the in-process bus and the Redis bus; Redis keys and channels live
under the per-test ``redis_prefix`` (removed afterwards), and every bus and client is closed.
``replicas`` makes two Redis buses on one prefix: two processes of one deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL, delete_prefixed
from trellis.events.base import EventBus, Gap, Item, Subscription
from trellis.events.memory import MemoryEventBus
from trellis.events.redis import RedisEventBus

WAIT_SECONDS = 5.0


def redis_bus(client: Redis, prefix: str, url: str = REDIS_URL, **options: Any) -> RedisEventBus:
    options.setdefault("ping_seconds", 0.5)
    options.setdefault("reconnect_seconds", 0.05)
    options.setdefault("max_reconnect_seconds", 0.2)
    options.setdefault("timeout_seconds", 2.0)
    return RedisEventBus(client, url, prefix=prefix, **options)


@asynccontextmanager
async def running(bus: EventBus) -> AsyncIterator[EventBus]:
    bus.start()
    try:
        if isinstance(bus, RedisEventBus):
            await until_connected(bus)
        yield bus
    finally:
        await bus.close()


async def until_connected(bus: RedisEventBus, connections: int = 1) -> None:
    """Wait (on the bus's state condition, no polling) for its n-th pub/sub connection."""
    async with asyncio.timeout(WAIT_SECONDS), bus.state_changed:
        await bus.state_changed.wait_for(lambda: bus.state == "connected" and bus.connections >= connections)


async def until_state(bus: RedisEventBus, state: str) -> None:
    async with asyncio.timeout(WAIT_SECONDS), bus.state_changed:
        await bus.state_changed.wait_for(lambda: bus.state == state)


async def next_item(subscription: Subscription, seconds: float = WAIT_SECONDS) -> Item:
    async with asyncio.timeout(seconds):
        return await subscription.get()


async def next_gap(subscription: Subscription) -> Gap:
    item = await next_item(subscription)
    assert isinstance(item, Gap), item
    return item


BusFactory = Callable[..., AbstractAsyncContextManager[EventBus]]


@pytest.fixture(params=["memory", "redis"])
async def make_bus(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[BusFactory]:
    """``async with make_bus(queue_size=...) as bus``: a started bus of the parametrized backend."""
    client = Redis.from_url(REDIS_URL)

    @asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[EventBus]:
        bus: EventBus = (
            MemoryEventBus(**options) if request.param == "memory" else redis_bus(client, redis_prefix, **options)
        )
        async with running(bus) as started:
            yield started

    try:
        yield factory
    finally:
        try:
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()


@pytest.fixture
async def bus(make_bus: BusFactory) -> AsyncIterator[EventBus]:
    async with make_bus() as started:
        yield started


@pytest.fixture
async def redis_admin(redis_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        try:
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()


async def kill_bus_connections(admin: Redis, bus: RedisEventBus) -> int:
    """``CLIENT KILL`` the bus's pub/sub connection (a Redis restart, as that bus sees it)."""
    killed = 0
    for client in await admin.client_list():
        if client.get("name") == bus.client_name:
            killed += int(await admin.client_kill_filter(_id=client["id"]))
    return killed
