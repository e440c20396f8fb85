"""Admins see every user's runs (issue 16: "Admins see everything; other users see their own"):
status, events, steps and history through REST and GraphQL. Seeing is not acting: an admin's
cancel or retry of another user's run answers 404, like any foreign id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import Harness
from tests.graphql.support import data_of, error_of, gql
from tests.workflows.support import ADMIN, events, execute, local_outbound, save, status

ONE_STEP = {"steps": [{"id": "a", "type": "transform", "with": {"value": "{{ input.n }}"}}]}


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Harness]:
    async with make_harness(database_url=database_url, **local_outbound()) as harness:
        yield harness


async def alices_run(h: Harness) -> tuple[str, dict[str, str], dict[str, Any]]:
    alice_id, key = await h.user_with_key("alice")
    alice = {"Authorization": f"Bearer {key}"}
    await save(h, "mine", ONE_STEP, headers=alice)
    run = await execute(h, "mine", {"n": 1}, headers=alice)
    assert run["status"] == "succeeded"
    return alice_id, alice, run


async def test_an_admin_reads_another_users_run_status_events_and_steps(h: Harness) -> None:
    alice_id, _, run = await alices_run(h)
    assert run["owner_id"] == alice_id
    detail = await status(h, run["id"], headers=ADMIN)
    assert detail["owner_id"] == alice_id
    assert [s["key"] for s in detail["steps"]] == ["a"]
    assert [e["type"] for e in await events(h, run["id"], headers=ADMIN)][-1] == "run.succeeded"
    # A non-admin still sees nothing of another's run.
    _, key = await h.user_with_key("bob")
    bob = {"Authorization": f"Bearer {key}"}
    for response in (
        await h.client.get(f"/api/v1/workflow/status/{run['id']}", headers=bob),
        await h.client.get(f"/api/v1/workflow/{run['id']}/events", headers=bob),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found_error"


async def test_an_admin_cannot_cancel_or_retry_another_users_run(h: Harness) -> None:
    _, alice, run = await alices_run(h)
    for action in ("cancel", "retry"):
        response = await h.client.post(f"/api/v1/workflow/{run['id']}/{action}", headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found_error"
        # The owner gets the real answer (the run ended: 409), so the 404 is about who asks.
        own = await h.client.post(f"/api/v1/workflow/{run['id']}/{action}", headers=alice)
        assert own.status_code == 409


async def test_history_owner_filter_for_admins_and_not_for_others(h: Harness) -> None:
    alice_id, alice, alices = await alices_run(h)
    await save(h, "admins", ONE_STEP)
    admins = await execute(h, "admins", {"n": 2})
    c = h.client

    async def ids(params: dict[str, str], headers: dict[str, str]) -> list[str]:
        response = await c.get("/api/v1/workflow/history", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]["items"]]

    assert await ids({}, ADMIN) == [admins["id"]]  # the default is unchanged: the caller's own
    assert set(await ids({"owner": "all"}, ADMIN)) == {admins["id"], alices["id"]}
    assert await ids({"owner": alice_id}, ADMIN) == [alices["id"]]
    assert await ids({"owner": "usr_nobody"}, ADMIN) == []
    assert await ids({"owner": alice_id}, alice) == [alices["id"]]  # naming oneself is fine
    for owner in ("all", "usr_nobody", admins["owner_id"]):
        response = await c.get("/api/v1/workflow/history", params={"owner": owner}, headers=alice)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "authorization_error"
    too_long = await c.get("/api/v1/workflow/history", params={"owner": "x" * 65}, headers=ADMIN)
    assert too_long.status_code == 400


RUNS = """query($owner: String) {
  workflowRuns(owner: $owner) { edges { node { id ownerId steps { key status } definition { name } } } }
}"""
STATUS = "query($id: ID!) { workflowStatus(id: $id) { id ownerId steps { key } definition { name } } }"


async def test_graphql_follows_the_same_rules(h: Harness) -> None:
    alice_id, alice, alices = await alices_run(h)
    run = data_of(await gql(h, STATUS, {"id": alices["id"]}, headers=ADMIN))["workflowStatus"]
    assert run == {"id": alices["id"], "ownerId": alice_id, "steps": [{"key": "a"}], "definition": {"name": "mine"}}
    nodes = [
        edge["node"] for edge in data_of(await gql(h, RUNS, {"owner": "all"}, headers=ADMIN))["workflowRuns"]["edges"]
    ]
    # The loaders (steps, definition) give an admin other users' parts too.
    assert nodes == [
        {
            "id": alices["id"],
            "ownerId": alice_id,
            "steps": [{"key": "a", "status": "succeeded"}],
            "definition": {"name": "mine"},
        }
    ]
    assert data_of(await gql(h, RUNS, {}, headers=ADMIN))["workflowRuns"]["edges"] == []
    error_of(await gql(h, RUNS, {"owner": "all"}, headers=alice), "authorization_error")
    _, key = await h.user_with_key("bob")
    answer = await gql(h, STATUS, {"id": alices["id"]}, headers={"Authorization": f"Bearer {key}"})
    error_of(answer, "not_found_error")
