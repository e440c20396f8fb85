"""A real WebSocket client follows a workflow run from start to complete, disconnects halfway,
reconnects with the last id it saw, and ends with every event exactly once and in order: on the
in-process bus, on Redis, and with the client on another replica than the one running the run.
Then Redis goes away under a connected client and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tests.conftest import REDIS_URL
from tests.events.support import AFTER_GATE, BEFORE_GATE, release, start_gated_run, stored_kinds
from tests.tcp_proxy import tcp_proxy
from tests.workflows.support import execute, save
from tests.ws.conftest import Live, receive, receive_until, request

LiveFactory = Callable[..., AbstractAsyncContextManager[Live]]
ALL = [*BEFORE_GATE, "run.waiting", *AFTER_GATE]
# Database polling and the safety resync far beyond the test's timeouts: only the bus moves things.
NO_POLLING = {"resync_seconds": 3600, "poll_seconds": 60}


def kind(message: dict[str, Any]) -> str:
    kind_: str = message["data"]["type"]
    return kind_


async def follow_with_a_disconnect(client: Live, server: Live, run_id: str, release_run: Callable[[], Any]) -> None:
    """The scenario, with the client on ``client``'s socket and the run's events made by ``server``."""
    topic = f"run:{run_id}"
    seen: list[dict[str, Any]] = []
    async with client.client() as ws:
        ack = await request(ws, {"type": "subscribe", "id": "follow", "topic": topic})
        assert ack["type"] == "ack"
        # The run's history so far comes from the database ...
        seen += await receive_until(ws, lambda m: kind(m) == "run.waiting")
        # ... what follows comes live; halfway through, the client goes away.
        await release_run()
        seen.append(await receive(ws))
    assert kind(seen[-1]) == "run.resumed"
    # Meanwhile the run goes on to its end.
    last_id = seen[-1]["id"]
    async with client.client() as ws:
        await request(ws, {"type": "subscribe", "id": "resume", "topic": topic, "last_id": last_id})
        seen += await receive_until(ws, lambda m: kind(m) == "run.succeeded")
        # Nothing more (no duplicate) comes after the end.
        assert (await request(ws, {"type": "ping", "id": "end"}))["type"] == "pong"

    assert [m["id"] for m in seen] == list(range(1, len(ALL) + 1))  # every event once, in order
    assert [kind(m) for m in seen] == ALL
    assert [(m["id"], kind(m)) for m in seen] == await stored_kinds(server.h, run_id)
    assert {m["topic"] for m in seen} == {topic}
    assert all(m["data"]["seq"] == m["id"] and m["data"]["run_id"] == run_id for m in seen)
    assert seen[0]["event"] == "workflow_execution_start"
    assert {m["event"] for m in seen[1:-1]} == {"workflow_execution_progress"}
    assert (seen[-1]["type"], seen[-1]["event"]) == ("complete", "workflow_execution_complete")


@pytest.fixture(params=["memory", "redis"])
def bus_settings(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, Any]:
    if request.param == "memory":
        return {"events": NO_POLLING}
    return {"events": NO_POLLING, "redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}


async def test_a_client_follows_a_run_across_a_disconnect(live_factory: LiveFactory, bus_settings: Any) -> None:
    async with live_factory(**bus_settings) as live:
        gated = await start_gated_run(live.h)
        await follow_with_a_disconnect(live, live, gated.run_id, lambda: release(live.h, gated))


async def test_a_client_on_another_replica_follows_the_run(
    live_factory: LiveFactory, postgres_url: str, redis_prefix: str
) -> None:
    """Replica A executes the run (its embedded worker); the client is connected to replica B."""
    shared = {"database_url": postgres_url, "redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}
    async with live_factory(**shared, events=NO_POLLING) as a, live_factory(**shared, events=NO_POLLING) as b:
        gated = await start_gated_run(a.h)
        await follow_with_a_disconnect(b, a, gated.run_id, lambda: release(a.h, gated))


async def test_redis_going_away_gives_gaps_and_run_topics_catch_up(
    live_factory: LiveFactory, redis_prefix: str
) -> None:
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    async with tcp_proxy(host, int(port)) as proxy:
        settings = {
            "redis_url": proxy.url(),
            "redis_key_prefix": redis_prefix,
            "redis_timeout_seconds": 0.5,
            "events": {**NO_POLLING, "reconnect_seconds": 0.05, "ping_seconds": 0.5},
        }
        async with live_factory(**settings) as live:
            h = live.h
            await save(h, "hello", {"steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
            gated = await start_gated_run(h)
            feed, run = f"user:{h.admin.user_id}", f"run:{gated.run_id}"
            async with live.client() as ws:
                await request(ws, {"type": "subscribe", "id": 1, "topic": feed})
                await request(ws, {"type": "subscribe", "id": 2, "topic": run})
                replayed = await receive_until(ws, lambda m: m["topic"] == run and kind(m) == "run.waiting")
                assert len(replayed) == len(BEFORE_GATE) + 1

                proxy.cut()
                bus = h.runtime.bus
                async with asyncio.timeout(10), bus.state_changed:  # type: ignore[attr-defined]
                    await bus.state_changed.wait_for(lambda: not bus.health().ok)  # type: ignore[attr-defined]
                ready = (await h.client.get("/ready")).json()
                assert ready["degraded"] == ["events"]
                assert ready["checks"]["events"]["state"] == "disconnected"
                # The run goes on while Redis is away (its events are in the database) ...
                await release(h, gated)
                proxy.restore()
                # ... and once the bus is back: a gap on the feed (it cannot be replayed), and the run
                # topic read back from the database (no gap: nothing is lost there). While degraded,
                # this replica's own events still reached its clients, so the order of the two varies.
                seen: set[str] = set()

                def both(message: dict[str, Any]) -> bool:
                    if message["type"] == "gap":
                        seen.add("gap")
                    elif message["topic"] == run and kind(message) == "run.succeeded":
                        seen.add("end")
                    return seen == {"gap", "end"}

                after = await receive_until(ws, both)
            gaps = [m for m in after if m["type"] == "gap"]
            assert [(g["topic"], g["data"]["reason"]) for g in gaps] == [(feed, "bus_reconnected")]
            run_messages = [m for m in after if m["topic"] == run]
            assert [kind(m) for m in run_messages] == AFTER_GATE
            assert [m["id"] for m in replayed + run_messages if m["topic"] == run] == list(range(1, len(ALL) + 1))
            assert (await h.client.get("/ready")).json()["status"] == "ready"
            # Runs started now are heard again.
            async with live.client() as ws:
                await request(ws, {"type": "subscribe", "id": 1, "topic": feed})
                await execute(h, "hello")
                done = await receive_until(ws, lambda m: m.get("event") == "workflow_execution_complete")
                assert kind(done[-1]) == "run.succeeded"
