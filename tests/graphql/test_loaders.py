"""DataLoaders: a nested query's SQL statements do not grow with the number of items it lists.

Statements are counted with a SQLAlchemy event listener on the runtime's engine while one GraphQL
request runs: contexts → relationships → related contexts → their relationships → theirs, and
runs → steps + the workflow version they ran, for a few items and for many.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import Harness
from tests.graphql.support import data_of, gql
from tests.workflows.support import execute, save

NESTED_CONTEXTS = """query($n: Int!) {
  contexts(first: $n, types: ["hub"], sort: CREATED) {
    edges { node {
      id content
      relationships { relationshipType other {
        id content
        relationships(direction: OUTGOING) { other { id content } }
      } }
    } }
  }
}"""
NESTED_RUNS = """query($n: Int!) {
  workflowRuns(first: $n) {
    edges { node { id status steps { key status } definition { name version description } } }
  }
}"""


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Harness]:
    """The workers' database poll is slowed down so that it does not run while statements are counted."""
    async with make_harness(database_url=database_url, workflow={"poll_seconds": 60}) as harness:
        yield harness


@contextmanager
def counting(h: Harness) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = h.runtime.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def statements_for(h: Harness, query: str, n: int, who: dict[str, str]) -> tuple[dict[str, Any], int]:
    with counting(h) as statements:
        data = data_of(await gql(h, query, {"n": n}, headers=who))
    return data, len(statements)


async def create(h: Harness, who: dict[str, str], kind: str, content: str, links: list[str]) -> str:
    h.clock.advance(1)
    body = {
        "type": kind,
        "content": content,
        "relationships": [{"target_context_id": target, "relationship_type": "has"} for target in links],
    }
    response = await h.client.post("/api/context", json=body, headers=who)
    assert response.status_code == 201, response.text
    created: str = response.json()["data"]["id"]
    return created


async def test_nested_contexts_take_the_same_statements_for_3_or_12(h: Harness, alice: dict[str, str]) -> None:
    hubs = []
    for i in range(12):
        deep = [await create(h, alice, "leaf2", f"deep {i}.{j}", []) for j in range(2)]
        leaves = [await create(h, alice, "leaf", f"leaf {i}.{j}", [deep[j]]) for j in range(2)]
        hubs.append(await create(h, alice, "hub", f"hub {i}", leaves))
    await h.runtime.indexer.wait_idle()  # its embedding writes would be counted too
    await h.runtime.logs.flush()
    await statements_for(h, NESTED_CONTEXTS, 12, alice)  # warm the credential cache and the pool

    small, few = await statements_for(h, NESTED_CONTEXTS, 3, alice)
    large, many = await statements_for(h, NESTED_CONTEXTS, 12, alice)

    nodes = [edge["node"] for edge in large["contexts"]["edges"]]
    assert [node["id"] for node in nodes] == hubs
    first = nodes[0]
    # Both created with the hub, at one moment: their order is by id.
    assert sorted(r["other"]["content"] for r in first["relationships"]) == ["leaf 0.0", "leaf 0.1"]
    assert [r["relationshipType"] for r in first["relationships"]] == ["has", "has"]
    for relationship in first["relationships"]:
        leaf = relationship["other"]
        assert [r["other"]["content"] for r in leaf["relationships"]] == [leaf["content"].replace("leaf", "deep")]
    assert len(small["contexts"]["edges"]) == 3

    # The page, each level's relationships (one statement for every context of the level), each
    # level's related contexts: the same for 3 hubs (21 contexts) as for 12 (84).
    assert few == many, (few, many)
    assert many <= 7


async def test_nested_runs_take_the_same_statements_for_2_or_8(h: Harness, alice: dict[str, str]) -> None:
    for name in ("first", "second"):
        definition = {
            "description": f"the {name} one",
            "steps": [
                {"id": "a", "type": "transform", "with": {"value": 1}},
                {"id": "b", "type": "transform", "with": {"value": "{{ steps.a.output + 1 }}"}},
            ],
        }
        await save(h, name, definition, headers=alice)
    for i in range(8):
        await execute(h, "first" if i % 2 else "second", {}, headers=alice)
    # Every run has ended; the embedded worker would still poll once each run's end woke it, and
    # its statements would be counted with the query's. Stop it (the harness's close stops it again).
    worker = h.runtime.workflow_worker
    assert worker is not None
    await worker.stop()
    await h.runtime.indexer.wait_idle()
    await h.runtime.logs.flush()
    await statements_for(h, NESTED_RUNS, 8, alice)  # warm the credential cache and the pool

    small, few = await statements_for(h, NESTED_RUNS, 2, alice)
    large, many = await statements_for(h, NESTED_RUNS, 8, alice)

    runs = [edge["node"] for edge in large["workflowRuns"]["edges"]]
    assert len(runs) == 8
    assert all(
        run["steps"] == [{"key": "a", "status": "succeeded"}, {"key": "b", "status": "succeeded"}] for run in runs
    )
    assert {run["definition"]["description"] for run in runs} == {"the first one", "the second one"}
    assert len(small["workflowRuns"]["edges"]) == 2
    # The page, every run's steps, every run's workflow version: three, whatever the page size.
    assert few == many, (few, many)
    assert many <= 4
