"""Mutations: generate, contexts (create, update, delete, link, unlink) and workflow runs (execute,
cancel, retry) through the same services as REST, with the same refusals — on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Harness
from tests.gateway.upstream import FakeUpstream
from tests.graphql.support import data_of, error_of, field_entries, gql
from tests.workflows.support import save

HELLO = {
    "input_schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    "steps": [{"id": "greet", "type": "transform", "with": {"value": "Hello, {{ input.name }}!"}}],
    "output": "{{ steps.greet.output }}",
}
PAUSE = {"steps": [{"id": "pause", "type": "wait", "with": {"seconds": 3600}}]}
CREATE = """mutation($input: ContextCreateInput!) {
  createContext(input: $input) { id type content metadata version relationships { targetId relationshipType } }
}"""
EXECUTE = """mutation($input: ExecuteWorkflowInput!) {
  executeWorkflow(input: $input) { created run { id status result progress } }
}"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("fake-model",)).start()
    yield server
    server.stop()


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str, upstream: FakeUpstream) -> AsyncIterator[Harness]:
    model = {"provider": "openai", "base_url": upstream.base_url, "model_id": "fake-model", "api_key": "sk-test"}
    async with make_harness(database_url=database_url, models={"up": model}) as harness:
        yield harness


async def create(h: Harness, who: dict[str, str], content: str, **fields: Any) -> dict[str, Any]:
    found: dict[str, Any] = data_of(
        await gql(h, CREATE, {"input": {"type": "note", "content": content, **fields}}, headers=who)
    )["createContext"]
    return found


async def until_waiting(h: Harness, run_id: str, who: dict[str, str]) -> None:
    async with asyncio.timeout(10):
        query = "query($id: ID!) { workflowStatus(id: $id) { status } }"
        while data_of(await gql(h, query, {"id": run_id}, headers=who))["workflowStatus"]["status"] != "waiting":
            await asyncio.sleep(0.01)


async def test_generate(h: Harness, alice: dict[str, str]) -> None:
    query = "mutation($i: GenerateInput!) { generate(input: $i) { content model finishReason } }"
    answer = await gql(h, query, {"i": {"prompt": "Say hello.", "model": "up", "temperature": 0}}, headers=alice)
    assert data_of(answer)["generate"] == {
        "content": "Hello from the fake upstream.",
        "model": "up",
        "finishReason": "stop",
    }
    refused = await gql(
        h, query, {"i": {"prompt": "x", "model": "up", "temperature": 3, "cache": "sometimes"}}, headers=alice
    )
    error = error_of(refused, "validation_error", path=["generate"])
    assert set(field_entries(error)) == {("temperature", "less_than_equal"), ("cache", "literal_error")}
    assert refused["data"] is None


async def test_context_lifecycle(h: Harness, alice: dict[str, str]) -> None:
    target = await create(h, alice, "the target")
    created = await create(
        h,
        alice,
        "Use SQLite by default",
        metadata={"adr": 7},
        relationships=[{"targetContextId": target["id"], "relationshipType": "depends_on"}],
    )
    assert created["version"] == 1
    assert created["metadata"] == {"adr": 7}
    assert created["relationships"] == [{"targetId": target["id"], "relationshipType": "depends_on"}]

    update = (
        "mutation($id: ID!, $input: ContextUpdateInput!) { updateContext(id: $id, input: $input) { content version } }"
    )
    changed = await gql(
        h, update, {"id": created["id"], "input": {"content": "PostgreSQL too", "version": 1}}, headers=alice
    )
    assert data_of(changed)["updateContext"] == {"content": "PostgreSQL too", "version": 2}
    stale = await gql(h, update, {"id": created["id"], "input": {"content": "late", "version": 1}}, headers=alice)
    error = error_of(stale, "conflict_error", path=["updateContext"])
    assert error["extensions"]["status"] == 409
    assert error["extensions"]["details"]["current_version"] == 2
    nothing = await gql(h, update, {"id": created["id"], "input": {}}, headers=alice)
    error_of(nothing, "validation_error")

    link = (
        "mutation($id: ID!, $input: RelationshipInput!) "
        "{ linkContexts(id: $id, input: $input) { id direction strength other { id } } }"
    )
    made = data_of(
        await gql(
            h,
            link,
            {
                "id": target["id"],
                "input": {"targetContextId": created["id"], "relationshipType": "cites", "strength": 0.5},
            },
            headers=alice,
        )
    )["linkContexts"]
    assert made["direction"] == "OUTGOING"
    assert made["other"] == {"id": created["id"]}
    again = await gql(
        h,
        link,
        {"id": target["id"], "input": {"targetContextId": created["id"], "relationshipType": "cites"}},
        headers=alice,
    )
    assert error_of(again, "conflict_error")["extensions"]["details"]["relationship_id"] == made["id"]
    itself = await gql(
        h,
        link,
        {"id": target["id"], "input": {"targetContextId": target["id"], "relationshipType": "x"}},
        headers=alice,
    )
    assert field_entries(error_of(itself, "validation_error")) == [("target_context_id", "value_error")]
    strength = await gql(
        h,
        link,
        {"id": target["id"], "input": {"targetContextId": created["id"], "relationshipType": "y", "strength": 2}},
        headers=alice,
    )
    assert field_entries(error_of(strength, "validation_error")) == [("strength", "less_than_equal")]

    unlink = "mutation($id: ID!, $r: ID!) { unlinkContexts(id: $id, relationshipId: $r) { id } }"
    assert data_of(await gql(h, unlink, {"id": target["id"], "r": made["id"]}, headers=alice))["unlinkContexts"] == {
        "id": made["id"]
    }

    delete = "mutation($id: ID!, $v: Int) { deleteContext(id: $id, version: $v) { id deleted relationshipsRemoved } }"
    error_of(await gql(h, delete, {"id": created["id"], "v": 1}, headers=alice), "conflict_error")
    removed = data_of(await gql(h, delete, {"id": created["id"], "v": 2}, headers=alice))["deleteContext"]
    assert removed == {"id": created["id"], "deleted": True, "relationshipsRemoved": 1}
    error_of(await gql(h, delete, {"id": created["id"]}, headers=alice), "not_found_error", path=["deleteContext"])


async def test_context_writes_on_another_users_context_are_not_found(
    h: Harness, alice: dict[str, str], bob: dict[str, str]
) -> None:
    mine = await create(h, alice, "alice's")
    theirs = await create(h, bob, "bob's")
    for query, variables in (
        ('mutation($id: ID!) { updateContext(id: $id, input: {content: "x"}) { id } }', {"id": theirs["id"]}),
        ("mutation($id: ID!) { deleteContext(id: $id) { id } }", {"id": theirs["id"]}),
        (
            "mutation($id: ID!, $t: String!) "
            '{ linkContexts(id: $id, input: {targetContextId: $t, relationshipType: "x"}) { id } }',
            {"id": mine["id"], "t": theirs["id"]},
        ),
    ):
        answer = await gql(h, query, variables, headers=alice)
        error_of(answer, "not_found_error")
        assert "bob's" not in str(answer)
    # Nothing changed for bob.
    still = data_of(
        await gql(h, "query($id: ID!) { context(id: $id) { content version } }", {"id": theirs["id"]}, headers=bob)
    )
    assert still["context"] == {"content": "bob's", "version": 1}
    # A relationship to another's context is refused at creation too, atomically.
    refused = await gql(
        h,
        CREATE,
        {
            "input": {
                "type": "note",
                "content": "x",
                "relationships": [{"targetContextId": theirs["id"], "relationshipType": "x"}],
            }
        },
        headers=alice,
    )
    assert error_of(refused, "not_found_error")["extensions"]["details"]["field"] == "relationships.0.target_context_id"


async def test_workflow_execute_cancel_retry(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    await save(h, "hello", HELLO, headers=alice)
    ran = data_of(
        await gql(
            h,
            EXECUTE,
            {"input": {"workflow": "hello", "input": {"name": "Ada"}, "wait": 10, "idempotencyKey": "k1"}},
            headers=alice,
        )
    )
    assert ran["executeWorkflow"]["created"] is True
    assert ran["executeWorkflow"]["run"]["status"] == "succeeded"
    assert ran["executeWorkflow"]["run"]["result"] == '"Hello, Ada!"'
    again = data_of(
        await gql(
            h,
            EXECUTE,
            {"input": {"workflow": "hello", "input": {"name": "Ada"}, "idempotencyKey": "k1"}},
            headers=alice,
        )
    )
    assert again["executeWorkflow"]["created"] is False
    assert again["executeWorkflow"]["run"]["id"] == ran["executeWorkflow"]["run"]["id"]

    bad = await gql(h, EXECUTE, {"input": {"workflow": "hello", "input": {"name": 7}}}, headers=alice)
    assert field_entries(error_of(bad, "validation_error")) == [("input.name", "schema_type")]
    missing = await gql(h, EXECUTE, {"input": {"workflow": "nope"}}, headers=alice)
    error_of(missing, "not_found_error", path=["executeWorkflow"])

    run_id = ran["executeWorkflow"]["run"]["id"]
    cancel = "mutation($id: ID!) { cancelWorkflowRun(id: $id) { id status cancelRequested } }"
    retry = "mutation($id: ID!) { retryWorkflowRun(id: $id) { id status } }"
    ended = await gql(h, cancel, {"id": run_id}, headers=alice)
    assert error_of(ended, "conflict_error")["extensions"]["details"]["status"] == "succeeded"
    error_of(await gql(h, retry, {"id": run_id}, headers=alice), "conflict_error")

    await save(h, "pause", PAUSE, headers=alice)
    paused = data_of(await gql(h, EXECUTE, {"input": {"workflow": "pause"}}, headers=alice))["executeWorkflow"]["run"]
    await until_waiting(h, paused["id"], alice)
    error_of(await gql(h, cancel, {"id": paused["id"]}, headers=bob), "not_found_error", path=["cancelWorkflowRun"])
    cancelled = data_of(await gql(h, cancel, {"id": paused["id"]}, headers=alice))["cancelWorkflowRun"]
    assert cancelled["status"] == "cancelled"
    error_of(await gql(h, retry, {"id": paused["id"]}, headers=bob), "not_found_error")
    retried = data_of(await gql(h, retry, {"id": paused["id"]}, headers=alice))["retryWorkflowRun"]
    assert retried["status"] in ("queued", "running", "waiting")
