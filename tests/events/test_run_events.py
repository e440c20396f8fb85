"""Workflow run events on the bus, and the run event stream (SSE) driven by it.

Each test runs on the in-process bus and on Redis (``bus_settings``). The SSE tests set the
database poll and the resync far beyond the test's timeout: a stream that moved by polling
instead of by the bus would time out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import REDIS_URL, Harness
from tests.events.conftest import next_item
from tests.events.support import AFTER_GATE, BEFORE_GATE, release, start_gated_run, stored_kinds
from tests.live_server import real_server
from tests.tcp_proxy import tcp_proxy
from tests.workflows.support import ADMIN, execute, save
from trellis.events.base import Delivery, Subscription
from trellis.events.runs import RunFeed, row_delivery
from trellis.workflows.models import WorkflowEvent

NO_POLLING = {"resync_seconds": 3600, "poll_seconds": 60}
SSE = {**ADMIN, "Accept": "text/event-stream"}


@pytest.fixture(params=["memory", "redis"])
def bus_settings(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, Any]:
    if request.param == "memory":
        return {"events": NO_POLLING}
    return {"events": NO_POLLING, "redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}


@pytest.fixture
async def h(make_harness: Callable[..., Any], bus_settings: dict[str, Any]) -> AsyncIterator[Harness]:
    async with make_harness(**bus_settings) as harness:
        yield harness


async def deliveries_until(subscription: Subscription, done: Callable[[Delivery], bool]) -> list[Delivery]:
    out: list[Delivery] = []
    while True:
        item = await next_item(subscription)
        assert isinstance(item, Delivery), item
        out.append(item)
        if done(item):
            return out


def is_end(delivery: Delivery) -> bool:
    return delivery.message()["data"].get("type") == "run.succeeded"


async def test_committed_run_events_go_to_the_run_the_owner_and_the_dashboard(h: Harness) -> None:
    bus = h.runtime.bus
    async with bus.subscribe() as feed, bus.subscribe() as dashboard:
        await feed.add(f"user:{h.admin.user_id}")
        await dashboard.add("dashboard")
        gated = await start_gated_run(h)
        async with bus.subscribe() as run:
            await run.add(f"run:{gated.run_id}")
            await release(h, gated)
            on_run = await deliveries_until(run, is_end)
        on_feed = await deliveries_until(feed, is_end)
        on_dashboard = [await next_item(dashboard) for _ in range(2)]

    stored = await stored_kinds(h, gated.run_id)
    assert [kind for _, kind in stored] == [*BEFORE_GATE, "run.waiting", *AFTER_GATE]
    # The run's topic: ids are the events' seq (this subscriber joined after the gate).
    assert [(d.id, d.message()["data"]["type"]) for d in on_run] == stored[len(BEFORE_GATE) + 1 :]
    # The owner's feed: every event of the run, ids assigned by the bus, the seq inside.
    assert [(d.message()["data"]["seq"], d.message()["data"]["type"]) for d in on_feed] == stored
    assert [d.id for d in on_feed] == list(range(1, len(stored) + 1))
    first, last = on_feed[0].message(), on_feed[-1].message()
    assert (first["type"], first["component"], first["event"]) == ("update", "workflow", "workflow_execution_start")
    assert (last["type"], last["event"]) == ("complete", "workflow_execution_complete")
    assert {m.message()["event"] for m in on_feed[1:-1]} == {"workflow_execution_progress"}
    assert last["data"]["run_id"] == gated.run_id
    assert last["topic"] == f"user:{h.admin.user_id}"
    # The dashboard: the run's start and end only.
    assert [(d.message()["component"], d.message()["data"]["type"]) for d in on_dashboard] == [  # type: ignore[union-attr]
        ("dashboard", "run.queued"),
        ("dashboard", "run.succeeded"),
    ]


async def test_events_are_published_only_after_they_are_committed(h: Harness) -> None:
    """Whoever hears of an event can read it back from the database at once."""
    await save(h, "hello", {"steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
    seen: list[tuple[int, bool]] = []
    async with h.runtime.bus.subscribe() as feed:
        await feed.add(f"user:{h.admin.user_id}")
        run = await execute(h, "hello", wait=0)
        for delivery in await deliveries_until(feed, is_end):
            seq = delivery.message()["data"]["seq"]
            seen.append((seq, seq in dict(await stored_kinds(h, run["id"]))))
    assert [seq for seq, _ in seen] == list(range(1, 6))
    assert all(found for _, found in seen), seen


async def read_sse(
    client: httpx.AsyncClient,
    run_id: str,
    headers: dict[str, str],
    received: list[tuple[int, str]],
    reached: tuple[int, asyncio.Event] | None = None,
) -> None:
    """Read the stream to its end into ``received``; ``reached`` = (n, event): set once n arrived."""
    async with client.stream("GET", f"/api/v1/workflow/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                event[name] = value.strip()
            elif not line and "data" in event:
                data = json.loads(event["data"])
                assert data["seq"] == int(event["id"])
                assert data["type"] == event["event"]
                received.append((data["seq"], data["type"]))
                event = {}
                if reached is not None and len(received) >= reached[0]:
                    reached[1].set()


async def test_the_sse_stream_follows_a_live_run_through_the_bus(h: Harness) -> None:
    gated = await start_gated_run(h)
    received: list[tuple[int, str]] = []
    stored_before = asyncio.Event()
    async with real_server(h.app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        reader = asyncio.create_task(
            read_sse(client, gated.run_id, SSE, received, (len(BEFORE_GATE) + 1, stored_before))
        )
        # What was stored before the stream opened arrives from the database ...
        async with asyncio.timeout(10):
            await stored_before.wait()
        assert not reader.done()
        # ... and what follows, live, until the run ends (nothing polls: see NO_POLLING).
        await release(h, gated)
        async with asyncio.timeout(10):
            await reader
        assert received == await stored_kinds(h, gated.run_id)
        # Resuming after an id replays only what follows it, and ends (the run is over).
        resumed: list[tuple[int, str]] = []
        async with asyncio.timeout(10):
            await read_sse(client, gated.run_id, {**SSE, "Last-Event-ID": "4"}, resumed)
    assert resumed == received[4:]


async def test_sse_polls_the_database_while_the_bus_is_degraded(
    make_harness: Callable[..., Any], redis_prefix: str
) -> None:
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    async with tcp_proxy(host, int(port)) as proxy:
        settings = {
            "redis_url": proxy.url(),
            "redis_key_prefix": redis_prefix,
            "redis_timeout_seconds": 0.5,
            "events": {"resync_seconds": 3600, "poll_seconds": 0.05, "reconnect_seconds": 0.05},
        }
        async with make_harness(**settings) as h:
            gated = await start_gated_run(h)
            proxy.cut()
            async with asyncio.timeout(10), h.runtime.bus.state_changed:  # type: ignore[attr-defined]
                await h.runtime.bus.state_changed.wait_for(lambda: not h.runtime.bus.health().ok)  # type: ignore[attr-defined]
            ready = await h.client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["degraded"] == ["events"]
            assert ready.json()["checks"]["events"]["ok"] is False
            received: list[tuple[int, str]] = []
            async with real_server(h.app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
                reader = asyncio.create_task(read_sse(client, gated.run_id, SSE, received))
                await release(h, gated)
                async with asyncio.timeout(10):
                    await reader
            assert received == await stored_kinds(h, gated.run_id)
            proxy.restore()


def event_row(seq: int, kind: str = "step.started") -> WorkflowEvent:
    from datetime import UTC, datetime

    return WorkflowEvent(run_id="run_x", seq=seq, type=kind, step=None, data={}, at=datetime(2026, 1, 1, tzinfo=UTC))


async def test_a_run_feed_delivers_each_event_once_and_in_order() -> None:
    stored = [event_row(n) for n in range(1, 8)] + [event_row(8, "run.succeeded")]
    reads: list[int] = []

    async def read_after(seq: int) -> list[WorkflowEvent]:
        reads.append(seq)
        return [row for row in stored if row.seq > seq][:3]  # pages of three

    feed = RunFeed(read_after, last=2, page=3)
    assert [d.id for d in await feed.catch_up()] == [3, 4, 5, 6, 7, 8]
    assert reads == [2, 5, 8]
    assert feed.ended
    assert await feed.offer(row_delivery(stored[4])) == []  # a duplicate
    feed = RunFeed(read_after, last=2, page=3)
    assert [d.id for d in await feed.offer(row_delivery(stored[2]))] == [3]  # the next one: no read
    reads.clear()
    # A hole (4 missing): the database fills it, then the live one follows (and is not repeated).
    assert [d.id for d in await feed.offer(row_delivery(stored[5]))] == [4, 5, 6, 7, 8]
    assert reads == [3, 6]
    assert await feed.offer(row_delivery(stored[3])) == []
