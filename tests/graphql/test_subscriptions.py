"""Subscriptions over graphql-transport-ws on a real socket: workflowProgress follows a run's event
log from the database to its end (and resumes after a seq), aiGeneration streams tokens; the
credential goes in connection_init; another user's or a missing run is an error, never data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Harness
from tests.gateway.upstream import FakeUpstream, Ok, Slow
from tests.graphql.support import data_of, gql
from tests.graphql.ws import graphql_socket, served
from tests.workflows.support import save

ADMIN = Harness.auth(ADMIN_KEY)
SLOW = {
    "steps": [
        {"id": "a", "type": "transform", "with": {"value": 1}},
        {"id": "pause", "type": "wait", "with": {"seconds": 0.3}},
        {"id": "b", "type": "transform", "with": {"value": "{{ steps.a.output + 1 }}"}},
    ],
    "output": "{{ steps.b.output }}",
}
PROGRESS = """subscription($id: ID!, $after: Int) {
  workflowProgress(runId: $id, after: $after) { runId seq type step data run { status progress } }
}"""
GENERATION = """subscription { aiGeneration(prompt: "Say hello.", model: "up") {
  delta done response { content model tokensUsed finishReason }
} }"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("fake-model",)).start()
    yield server
    server.stop()


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str, upstream: FakeUpstream) -> AsyncIterator[Harness]:
    upstream.reset()
    model = {"provider": "openai", "base_url": upstream.base_url, "model_id": "fake-model", "api_key": "sk-test"}
    async with make_harness(database_url=database_url, models={"up": model}, workflow={"poll_seconds": 0.1}) as harness:
        yield harness


async def start(h: Harness, who: dict[str, str], name: str = "slow") -> str:
    await save(h, name, SLOW, headers=who)
    run = data_of(
        await gql(
            h,
            "mutation($w: String!) { executeWorkflow(input: {workflow: $w}) { run { id } } }",
            {"w": name},
            headers=who,
        )
    )
    run_id: str = run["executeWorkflow"]["run"]["id"]
    return run_id


def wake_on_wait(h: Harness) -> Callable[[dict[str, Any]], None]:
    """The harness's clock moves only when told: once the run waits, move it past the wait."""

    def on_next(payload: dict[str, Any]) -> None:
        event = (payload.get("data") or {}).get("workflowProgress") or {}
        if event.get("type") == "run.waiting":
            h.clock.advance(1)

    return on_next


async def test_workflow_progress_follows_a_run_to_its_end(h: Harness, alice: dict[str, str]) -> None:
    run_id = await start(h, alice)
    async with served(h) as url, graphql_socket(url) as ws:
        assert (await ws.init({"Authorization": alice["Authorization"]}))["type"] == "connection_ack"
        await ws.subscribe("1", PROGRESS, {"id": run_id})
        payloads, end = await ws.until_done("1", on_next=wake_on_wait(h))
        assert end == {"id": "1", "type": "complete"}
        events = [p["data"]["workflowProgress"] for p in payloads]
        assert all("errors" not in p for p in payloads)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # every event, once, in order
        assert {e["runId"] for e in events} == {run_id}
        types = [e["type"] for e in events]
        assert types[0] == "run.queued"
        assert types[-1] == "run.succeeded"
        assert "run.waiting" in types  # it was followed live through the wait, not only replayed
        assert [e["step"] for e in events if e["type"] == "step.succeeded"] == ["a", "pause", "b"]
        assert events[-1]["run"] == {"status": "succeeded", "progress": 1.0}

        # Resuming after a seq replays only what came after it, from the database.
        await ws.subscribe("2", PROGRESS, {"id": run_id, "after": len(events) - 2})
        again, end = await ws.until_done("2")
        assert end["type"] == "complete"
        assert [p["data"]["workflowProgress"]["seq"] for p in again] == [len(events) - 1, len(events)]


async def test_a_missing_or_another_users_run_is_an_error_not_data(
    h: Harness, alice: dict[str, str], bob: dict[str, str]
) -> None:
    run_id = await start(h, alice)
    async with served(h) as url, graphql_socket(url) as ws:
        assert (await ws.init({"Authorization": bob["Authorization"]}))["type"] == "connection_ack"
        for sub_id, target in (("missing", "run_does_not_exist"), ("theirs", run_id)):
            await ws.subscribe(sub_id, PROGRESS, {"id": target})
            payloads, end = await ws.until_done(sub_id)
            assert payloads == []
            assert end["type"] == "error", end
            [error] = end["payload"]
            assert error["extensions"]["code"] == "not_found_error"
            assert error["extensions"]["status"] == 404
            assert error["message"] == "workflow run not found"
        # The socket is still usable: an unknown field is a validation error for that operation only.
        await ws.subscribe("bad", "subscription { nothing }")
        _, end = await ws.until_done("bad")
        assert end["type"] == "error"
        assert end["payload"][0]["extensions"]["fields"][0]["type"] == "graphql_validation"


async def test_ai_generation_streams_tokens_then_the_answer(
    h: Harness, alice: dict[str, str], upstream: FakeUpstream
) -> None:
    upstream.script("chat", Ok(text="one two three four"))
    async with served(h) as url, graphql_socket(url) as ws:
        await ws.init({"X-API-Key": alice["Authorization"].removeprefix("Bearer ")})
        await ws.subscribe("g", GENERATION)
        payloads, end = await ws.until_done("g")
        assert end["type"] == "complete"
        events = [p["data"]["aiGeneration"] for p in payloads]
        deltas = [e["delta"] for e in events if not e["done"]]
        assert "".join(deltas) == "one two three four"
        assert len(deltas) == 4
        last = events[-1]
        assert last["done"] is True
        assert last["delta"] is None
        assert last["response"]["content"] == "one two three four"
        assert last["response"]["model"] == "up"
    await h.runtime.logs.flush()
    [row] = (await h.client.get("/api/v1/db/logs", headers=alice)).json()["data"]["items"]
    assert row["door"] == "graphql"
    assert row["status"] == "ok"
    assert row["response"] == "one two three four"


async def test_completing_the_subscription_stops_the_model_call(
    h: Harness, alice: dict[str, str], upstream: FakeUpstream
) -> None:
    upstream.script("chat", Slow(seconds=30))
    async with served(h) as url, graphql_socket(url) as ws:
        await ws.init({"Authorization": alice["Authorization"]})
        await ws.subscribe("g", GENERATION)
        async with asyncio.timeout(10):
            while not upstream.calls("chat"):
                await asyncio.sleep(0.01)
        await ws.send({"id": "g", "type": "complete"})
        async with asyncio.timeout(10):
            while True:
                await h.runtime.logs.flush()
                items = (await h.client.get("/api/v1/db/logs", headers=alice)).json()["data"]["items"]
                if items:
                    break
                await asyncio.sleep(0.05)
        [row] = items
        assert row["status"] == "cancelled"
        assert row["door"] == "graphql"


@pytest.mark.parametrize("payload", [None, {"Authorization": "Bearer trl_not-a-key"}, {"X-API-Key": ""}])
async def test_a_socket_without_a_good_credential_is_closed_4403(h: Harness, payload: dict[str, Any] | None) -> None:
    async with served(h) as url, graphql_socket(url) as ws:
        await ws.send({"type": "connection_init", "payload": payload or {}})
        code, reason = await ws.closed()
        assert code == 4403
        assert reason == "Forbidden"


async def test_the_handshake_header_is_a_credential_and_revocation_stops_new_subscriptions(h: Harness) -> None:
    user_id, key = await h.user_with_key("carol")
    run_id = await start(h, Harness.auth(key))
    async with served(h) as url, graphql_socket(url, headers={"X-API-Key": key}) as ws:
        assert (await ws.init())["type"] == "connection_ack"
        await ws.subscribe("1", PROGRESS, {"id": run_id})
        _, end = await ws.until_done("1", on_next=wake_on_wait(h))
        assert end["type"] == "complete"
        [row] = await h.runtime.auth.list_keys(h.admin, user_id)
        await h.runtime.auth.revoke_key(h.admin, row.id)
        await ws.subscribe("2", PROGRESS, {"id": run_id})
        _, end = await ws.until_done("2")
        assert end["type"] == "error"
        assert end["payload"][0]["extensions"]["code"] == "authentication_error"


async def test_syntax_errors_close_the_socket_as_the_protocol_says(h: Harness, alice: dict[str, str]) -> None:
    async with served(h) as url, graphql_socket(url) as ws:
        await ws.init({"Authorization": alice["Authorization"]})
        await ws.subscribe("x", "subscription { workflowProgress(runId: ")
        code, reason = await ws.closed()
        assert code == 4400
        assert reason is not None
        assert "Syntax Error" in reason
