"""ContextService on SQLite and PostgreSQL: atomic writes under races, indexing calls, batched graph queries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import event, func, or_, select

from tests.conftest import Harness
from trellis.auth.schemas import Principal
from trellis.context import repository as repo
from trellis.context.models import Context, ContextRelationship
from trellis.context.schemas import ContextCreate, ContextUpdate, RelationshipCreate, parse_version_tag
from trellis.context.service import ContextService
from trellis.kit.errors import Conflict, NotFound, ValidationFailed


class RecordingIndexer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.indexed: list[tuple[str, list[str]]] = []
        self.forgotten: list[tuple[str, list[str]]] = []

    async def index(self, owner_id: str, context_ids: Sequence[str]) -> None:
        self.indexed.append((owner_id, list(context_ids)))
        if self.fail:
            raise RuntimeError("embedding model unavailable")

    def schedule(self, owner_id: str, context_ids: Sequence[str]) -> None:
        raise AssertionError("the core indexes its own small writes at once")

    async def forget(self, owner_id: str, context_ids: Sequence[str]) -> None:
        self.forgotten.append((owner_id, list(context_ids)))
        if self.fail:
            raise RuntimeError("cache gone")


@pytest.fixture
async def alice(h: Harness) -> Principal:
    _, key = await h.user_with_key("alice")
    return await h.runtime.auth.authenticate_api_key(key)


def service(h: Harness) -> ContextService:
    return h.runtime.context


async def new(h: Harness, actor: Principal, content: str = "text", **fields: Any) -> Context:
    row, _ = await service(h).create(actor, ContextCreate(type=fields.pop("type", "note"), content=content, **fields))
    return row


async def relate(h: Harness, actor: Principal, source: str, target: str, kind: str = "next") -> None:
    h.clock.advance(1)
    await service(h).add_relationship(
        actor, source, RelationshipCreate(target_context_id=target, relationship_type=kind)
    )


# --- optimistic concurrency ----------------------------------------------------------------------


async def test_many_writers_with_the_same_version_one_wins(h: Harness, alice: Principal) -> None:
    ctx = await new(h, alice, "original")
    results = await asyncio.gather(
        *(service(h).update(alice, ctx.id, ContextUpdate(content=f"writer {i}"), expected_version=1) for i in range(6)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Context)]
    lost = [r for r in results if isinstance(r, Conflict)]
    assert len(won) == 1, results
    assert len(lost) == 5, results
    assert {e.details["current_version"] for e in lost} == {2}
    final = await service(h).get(alice, ctx.id)
    assert (final.content, final.version) == (won[0].content, 2)


async def test_writers_without_a_version_all_land(h: Harness, alice: Principal) -> None:
    ctx = await new(h, alice, "original")
    results = await asyncio.gather(
        *(service(h).update(alice, ctx.id, ContextUpdate(content=f"writer {i}")) for i in range(5))
    )
    assert sorted(r.version for r in results) == [2, 3, 4, 5, 6]
    final = await service(h).get(alice, ctx.id)
    assert final.version == 6
    # The last write is the content stored.
    assert final.content == max(results, key=lambda r: r.version).content


async def test_a_write_between_read_and_update_is_caught(
    h: Harness, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Force the race deterministically: another writer commits after our read, before our write."""
    ctx = await new(h, alice, "original")
    real = repo.update_if_version
    sneaked = []

    async def racing(session: Any, context_id: str, owner_id: str, version: int, values: dict[Any, Any]) -> bool:
        if not sneaked:
            sneaked.append(True)
            async with h.runtime.database.transaction() as other:
                assert await real(other, context_id, owner_id, version, {Context.content: "sneaky"})
        return await real(session, context_id, owner_id, version, values)

    monkeypatch.setattr(repo, "update_if_version", racing)
    with pytest.raises(Conflict) as caught:
        await service(h).update(alice, ctx.id, ContextUpdate(content="mine"), expected_version=1)
    assert caught.value.details == {"current_version": 2, "expected_version": 1}
    assert (await service(h).get(alice, ctx.id)).content == "sneaky"

    # Without a version, the update is retried on the newest one: nothing is lost, nothing fails.
    sneaked.clear()
    updated = await service(h).update(alice, ctx.id, ContextUpdate(content="mine"))
    assert (updated.content, updated.version) == ("mine", 4)


async def test_update_and_delete_of_a_vanished_context(h: Harness, alice: Principal) -> None:
    ctx = await new(h, alice)
    await service(h).delete(alice, ctx.id)
    with pytest.raises(NotFound):
        await service(h).update(alice, ctx.id, ContextUpdate(content="x"), expected_version=1)
    with pytest.raises(NotFound):
        await service(h).delete(alice, ctx.id)
    with pytest.raises(NotFound):
        await service(h).get(alice, "ctx_" + "x" * 100)


def test_version_tags() -> None:
    assert parse_version_tag("7") == 7
    assert parse_version_tag('"7"') == 7
    assert parse_version_tag('W/"7"') == 7
    assert parse_version_tag("*") is None
    for bad in ("", "x", '"7', 'W/7"', "-1", "0", '"1", "2"', "1" * 19):
        with pytest.raises(ValueError, match="If-Match"):
            parse_version_tag(bad)


# --- indexing ------------------------------------------------------------------------------------


async def test_indexer_runs_after_content_changes_only(h: Harness, alice: Principal) -> None:
    indexer = RecordingIndexer()
    service(h).indexer = indexer
    ctx = await new(h, alice, "first")
    assert indexer.indexed == [(alice.user_id, [ctx.id])]
    await service(h).update(alice, ctx.id, ContextUpdate(metadata={"k": "v"}, type="task"))
    await service(h).update(alice, ctx.id, ContextUpdate(content="first"))  # same content
    assert len(indexer.indexed) == 1
    await service(h).update(alice, ctx.id, ContextUpdate(content="second"))
    assert indexer.indexed[-1] == (alice.user_id, [ctx.id])
    assert len(indexer.indexed) == 2
    # A failed create indexes nothing.
    with pytest.raises(NotFound):
        await service(h).create(
            alice,
            ContextCreate(
                type="note",
                content="x",
                relationships=[RelationshipCreate(target_context_id="ctx_missing", relationship_type="x")],
            ),
        )
    assert len(indexer.indexed) == 2
    await service(h).delete(alice, ctx.id)
    assert indexer.forgotten == [(alice.user_id, [ctx.id])]


async def test_a_failing_indexer_does_not_fail_the_write(h: Harness, alice: Principal) -> None:
    service(h).indexer = RecordingIndexer(fail=True)
    ctx = await new(h, alice, "kept")
    assert (await service(h).get(alice, ctx.id)).content == "kept"
    updated = await service(h).update(alice, ctx.id, ContextUpdate(content="changed"))
    assert updated.version == 2
    await service(h).delete(alice, ctx.id)
    with pytest.raises(NotFound):
        await service(h).get(alice, ctx.id)


# --- relationships and the graph -----------------------------------------------------------------


async def test_relationships_cascade_with_their_contexts(h: Harness, alice: Principal) -> None:
    a = await new(h, alice, "a")
    b = await new(h, alice, "b")
    c = await new(h, alice, "c")
    await relate(h, alice, a.id, b.id)
    await relate(h, alice, c.id, a.id)
    await relate(h, alice, b.id, c.id)
    with pytest.raises(ValidationFailed):
        await relate(h, alice, a.id, a.id)
    with pytest.raises(Conflict):
        await relate(h, alice, a.id, b.id)
    result = await service(h).delete(alice, a.id)
    assert result.relationships_removed == 2
    async with h.runtime.database.session() as session:
        remaining = list((await session.execute(select(ContextRelationship))).scalars())
        touching_a = select(func.count()).where(
            or_(ContextRelationship.source_id == a.id, ContextRelationship.target_id == a.id)
        )
        assert (await session.execute(touching_a)).scalar_one() == 0
    assert [(r.source_id, r.target_id) for r in remaining] == [(b.id, c.id)]


async def test_graph_costs_one_query_per_level(h: Harness, alice: Principal) -> None:
    """A root with 8 children, each with 3 children of its own: 33 nodes, still a handful of queries."""
    root = await new(h, alice, "root")
    for i in range(8):
        child = await new(h, alice, f"child {i}")
        await relate(h, alice, root.id, child.id)
        for j in range(3):
            grandchild = await new(h, alice, f"grandchild {i}.{j}")
            await relate(h, alice, child.id, grandchild.id)
    statements: list[str] = []
    # Only this task's statements: the runtime's background workers (indexer, workflow poll,
    # metrics collector) share the engine and may run a statement meanwhile.
    this_task = asyncio.current_task()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if asyncio.current_task() is this_task:
            statements.append(statement)

    engine = h.runtime.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        graph = await service(h).graph(alice, root.id, depth=3)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(graph.nodes) == 33
    assert len(graph.edges) == 32
    assert [n.depth for n in graph.nodes].count(2) == 24
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # The root, one per level that had a frontier (3), and one for every node's row.
    assert len(selects) == 5, selects
