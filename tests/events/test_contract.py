"""The event-bus contract, asserted identically on the in-process bus and the Redis bus.

Every test runs twice (``make_bus`` is parametrized): MemoryEventBus, and RedisEventBus on the real
Redis under a per-test key prefix. Nothing sleeps: a test waits for the item it expects (with a
timeout that only bounds a failure), and proves that something did NOT arrive by publishing a
marker after it and receiving the marker first.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.events.conftest import BusFactory, next_item
from trellis.events.base import (
    SLOW_CONSUMER,
    Delivery,
    EventBus,
    SubscriptionClosed,
    frame_of,
    id_of_frame,
    message,
)


def msg(event: str = "workflow_execution_progress", **data: object) -> dict[str, object]:
    return message("update", "workflow", event, data, "2026-12-03T10:00:00.000Z")


async def delivery(subscription: object) -> Delivery:
    item = await next_item(subscription)  # type: ignore[arg-type]
    assert isinstance(item, Delivery), item
    return item


async def test_a_subscriber_gets_the_seed_message_with_topic_and_id(bus: EventBus) -> None:
    async with bus.subscribe() as sub:
        await sub.add("user:u1")
        sent = msg(run_id="r1", note="ünïcode ✓", nested={"list": [], "empty": {}})
        published = await bus.publish("user:u1", sent)
        got = await delivery(sub)
    assert got.topic == "user:u1"
    assert got.id == published == 1
    assert got.message() == {**sent, "topic": "user:u1", "id": 1}
    # The frame is exactly what a WebSocket client receives: the message plus topic and id.
    assert json.loads(got.frame) == got.message()
    assert list(json.loads(got.frame)) == ["type", "component", "event", "data", "timestamp", "topic", "id"]


async def test_bus_assigned_ids_grow_per_topic(bus: EventBus) -> None:
    async with bus.subscribe() as sub:
        await sub.add("user:a")
        await sub.add("user:b")
        ids = [await bus.publish("user:a", msg(n=n)) for n in range(3)]
        ids += [await bus.publish("user:b", msg(n=n)) for n in range(2)]
        ids += await bus.publish_many([("user:a", msg(n=3), None), ("user:b", msg(n=2), None)])
        got = [await delivery(sub) for _ in range(7)]
    assert ids == [1, 2, 3, 1, 2, 4, 3]
    assert [(d.topic, d.id, d.message()["data"]["n"]) for d in got] == [
        ("user:a", 1, 0),
        ("user:a", 2, 1),
        ("user:a", 3, 2),
        ("user:b", 1, 0),
        ("user:b", 2, 1),
        ("user:a", 4, 3),
        ("user:b", 3, 2),
    ]
    assert await bus.last_id("user:a") == 4
    assert await bus.last_id("user:b") == 3
    assert await bus.last_id("user:nobody") == 0


async def test_a_publishers_own_ids_go_through_and_the_highest_is_remembered(bus: EventBus) -> None:
    async with bus.subscribe() as sub:
        await sub.add("run:r1")
        assert await bus.publish("run:r1", msg(seq=5), id=5) == 5
        assert await bus.publish("run:r1", msg(seq=7), id=7) == 7
        # Late and out of order (another process's publish): delivered, the highest id is kept.
        assert await bus.publish("run:r1", msg(seq=6), id=6) == 6
        assert [(await delivery(sub)).id for _ in range(3)] == [5, 7, 6]
    assert await bus.last_id("run:r1") == 7


async def test_order_is_kept_for_many_messages(bus: EventBus) -> None:
    async with bus.subscribe(max_queue=1_000) as sub:
        await sub.add("run:r")
        await bus.publish_many([("run:r", msg(seq=n), n) for n in range(1, 201)])
        for n in range(201, 301):
            await bus.publish("run:r", msg(seq=n), id=n)
        ids = [(await delivery(sub)).id for _ in range(300)]
    assert ids == list(range(1, 301))


async def test_only_followed_topics_arrive_and_topics_come_and_go(bus: EventBus) -> None:
    async with bus.subscribe() as sub:
        await sub.add("user:me")
        await bus.publish("user:other", msg(marker="not for me"))
        await bus.publish("user:me", msg(marker="first"))
        assert (await delivery(sub)).message()["data"] == {"marker": "first"}

        await sub.add("run:r1")
        await bus.publish("run:r1", msg(marker="run"), id=1)
        assert (await delivery(sub)).topic == "run:r1"

        await sub.remove("run:r1")
        assert sub.topics == {"user:me"}
        await bus.publish("run:r1", msg(marker="after remove"), id=2)
        await bus.publish("user:me", msg(marker="second"))
        assert (await delivery(sub)).message()["data"] == {"marker": "second"}
        # Adding a topic twice, or removing one never added, changes nothing.
        await sub.add("user:me")
        await sub.remove("run:never")
        await bus.publish("user:me", msg(marker="third"))
        assert (await delivery(sub)).message()["data"] == {"marker": "third"}
        assert sub.pending() == 0


async def test_every_subscriber_of_a_topic_gets_every_message(bus: EventBus) -> None:
    subs = [bus.subscribe() for _ in range(5)]
    for sub in subs:
        await sub.add("dashboard")
    await bus.publish("dashboard", msg(n=1))
    assert [(await delivery(sub)).id for sub in subs] == [1] * 5
    # One leaves; the others still get what follows.
    await subs[0].aclose()
    await bus.publish("dashboard", msg(n=2))
    assert [(await delivery(sub)).id for sub in subs[1:]] == [2] * 4
    for sub in subs[1:]:
        await sub.aclose()


async def test_a_slow_subscriber_is_dropped_and_never_stalls_the_publisher(make_bus: BusFactory) -> None:
    async with make_bus(queue_size=10) as bus:
        slow, fast = bus.subscribe(), bus.subscribe(max_queue=100)
        await slow.add("user:u")
        await fast.add("user:u")
        # Nobody reads `slow`; publishing goes on regardless.
        async with asyncio.timeout(5):
            await bus.publish_many([("user:u", msg(n=n), None) for n in range(25)])
        assert [(await delivery(fast)).id for _ in range(25)] == list(range(1, 26))
        with pytest.raises(SubscriptionClosed) as dropped:
            await next_item(slow)
        assert dropped.value.reason == SLOW_CONSUMER
        assert "10 messages behind" in dropped.value.detail
        assert slow.closed
        assert slow.dropped is not None
        assert slow.pending() == 0  # what it had queued was let go
        # The dropped subscription holds no topic any more; the other one goes on.
        assert slow.topics == set()
        await bus.publish("user:u", msg(n=26))
        assert (await delivery(fast)).id == 26
        with pytest.raises(SubscriptionClosed):
            await slow.add("user:u")
        await fast.aclose()


async def test_closing_a_subscription_ends_its_iteration(bus: EventBus) -> None:
    sub = bus.subscribe()
    await sub.add("user:u")
    await bus.publish("user:u", msg(n=1))
    received = []

    async def read() -> None:
        async for item in sub:
            received.append(item)
            await sub.aclose()

    async with asyncio.timeout(5):
        await read()
    assert [getattr(item, "id", None) for item in received] == [1]


async def test_closing_the_bus_drops_its_subscribers_with_a_reason(make_bus: BusFactory) -> None:
    async with make_bus() as bus:
        sub = bus.subscribe()
        await sub.add("user:u")
        waiting = asyncio.create_task(next_item(sub))
        await asyncio.sleep(0)  # let the reader start waiting (a yield, not a timed wait)
    with pytest.raises(SubscriptionClosed) as closed:
        await waiting
    assert closed.value.reason == "bus_closed"


async def test_publishing_to_a_topic_nobody_follows_is_fine(bus: EventBus) -> None:
    assert await bus.publish("generation:g", msg(), id=1) == 1
    assert await bus.publish("user:nobody", msg()) == 1
    assert bus.health().ok


async def test_frames_carry_their_id_at_the_end() -> None:
    for id in (None, 0, 1, 12345678901234):
        frame = frame_of(msg(text='a "quoted": value}'), "user:x", id)
        assert id_of_frame(frame) == id
        assert json.loads(frame)["id"] == id
    with pytest.raises(ValueError, match="non-empty"):
        frame_of({}, "user:x", 1)
