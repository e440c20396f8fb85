"""/api/context: contexts, versions and If-Match, relationships, the graph — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, or_, select

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, Harness
from trellis.context.models import Context, ContextRelationship
from trellis.settings import DEFAULT_CONTEXT_TYPES, Role

API = "/api/context"
ADMIN = Harness.auth(ADMIN_KEY)


async def create(h: Harness, who: dict[str, str], content: str = "text", **body: Any) -> dict[str, Any]:
    body.setdefault("type", "note")
    data: dict[str, Any] = assert_ok(await h.client.post(API, json={"content": content, **body}, headers=who), 201)
    return data


async def link(h: Harness, who: dict[str, str], source: str, target: str, kind: str = "relates_to") -> dict[str, Any]:
    h.clock.advance(1)  # listings are oldest first; the test clock moves only when told to
    body = {"target_context_id": target, "relationship_type": kind, "strength": 0.5}
    data: dict[str, Any] = assert_ok(await h.client.post(f"{API}/{source}/relationships", json=body, headers=who), 201)
    return data


async def count(h: Harness, table: type[Context] | type[ContextRelationship]) -> int:
    async with h.runtime.database.session() as session:
        return (await session.execute(select(func.count()).select_from(table))).scalar_one()


# --- CRUD ----------------------------------------------------------------------------------------


async def test_create_get_update_delete(h: Harness, alice: dict[str, str]) -> None:
    response = await h.client.post(
        API, json={"type": "decision", "content": "Use SQLite by default", "metadata": {"adr": 7}}, headers=alice
    )
    created = assert_ok(response, 201)
    assert response.headers["etag"] == '"1"'
    assert created["id"].startswith("ctx_")
    assert created["type"] == "decision"
    assert created["content"] == "Use SQLite by default"
    assert created["metadata"] == {"adr": 7}
    assert created["version"] == 1
    assert len(created["content_hash"]) == 64
    assert created["relationships"] == []
    assert created["created_at"] == created["updated_at"]

    response = await h.client.get(f"{API}/{created['id']}", headers=alice)
    got = assert_ok(response)
    assert response.headers["etag"] == '"1"'
    assert {k: v for k, v in got.items()} == {k: v for k, v in created.items() if k != "relationships"}

    h.clock.advance(5)
    response = await h.client.put(f"{API}/{created['id']}", json={"content": "Use PostgreSQL"}, headers=alice)
    updated = assert_ok(response)
    assert response.headers["etag"] == '"2"'
    assert updated["version"] == 2
    assert updated["content"] == "Use PostgreSQL"
    assert updated["type"] == "decision"
    assert updated["metadata"] == {"adr": 7}
    assert updated["content_hash"] != created["content_hash"]
    assert updated["updated_at"] > updated["created_at"]

    deleted = assert_ok(await h.client.delete(f"{API}/{created['id']}", headers=alice))
    assert deleted == {"id": created["id"], "deleted": True, "relationships_removed": 0}
    assert_error(await h.client.get(f"{API}/{created['id']}", headers=alice), 404, "not_found_error")
    assert_error(await h.client.delete(f"{API}/{created['id']}", headers=alice), 404, "not_found_error")


async def test_update_replaces_only_given_fields(h: Harness, alice: dict[str, str]) -> None:
    ctx = await create(h, alice, "body", metadata={"a": 1, "b": 2})
    url = f"{API}/{ctx['id']}"
    updated = assert_ok(await h.client.put(url, json={"metadata": {"c": 3}}, headers=alice))
    assert updated["metadata"] == {"c": 3}
    assert updated["content"] == "body"
    assert updated["content_hash"] == ctx["content_hash"]
    updated = assert_ok(await h.client.put(url, json={"type": "task"}, headers=alice))
    assert (updated["type"], updated["version"]) == ("task", 3)
    error = assert_error(await h.client.put(url, json={}, headers=alice), 400, "validation_error")
    assert "Nothing to update" in error["message"]
    assert_error(await h.client.put(url, json={"version": 3}, headers=alice), 400, "validation_error")


async def test_types_are_listed_and_any_sane_type_is_accepted(h: Harness, alice: dict[str, str]) -> None:
    types = assert_ok(await h.client.get(f"{API}/types", headers=alice))
    assert types["known_types"] == list(DEFAULT_CONTEXT_TYPES)
    assert types["custom_allowed"] is True
    assert types["max_length"] == 64
    custom = await create(h, alice, type="runbook.v2_draft-1")
    assert custom["type"] == "runbook.v2_draft-1"


async def test_credentials_and_scopes(h: Harness, alice: dict[str, str]) -> None:
    assert_error(await h.client.post(API, json={"type": "note", "content": "x"}), 401, "authentication_error")
    assert_error(await h.client.get(f"{API}/ctx_x"), 401, "authentication_error")
    viewer_id = await h.create_user("vera", Role.VIEWER)
    _, viewer_key = await h.create_key(viewer_id)
    viewer = h.auth(viewer_key)
    assert_error(
        await h.client.post(API, json={"type": "note", "content": "x"}, headers=viewer), 403, "authorization_error"
    )
    assert_ok(await h.client.get(f"{API}/types", headers=viewer))


# --- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["1", '"1"', 'W/"1"', ' W/"1" '])
async def test_if_match_forms(h: Harness, alice: dict[str, str], tag: str) -> None:
    ctx = await create(h, alice)
    response = await h.client.put(f"{API}/{ctx['id']}", json={"content": "new"}, headers={**alice, "If-Match": tag})
    assert assert_ok(response)["version"] == 2


async def test_stale_if_match_is_409_with_current_version(h: Harness, alice: dict[str, str]) -> None:
    ctx = await create(h, alice, "v1")
    url = f"{API}/{ctx['id']}"
    assert_ok(await h.client.put(url, json={"content": "v2"}, headers={**alice, "If-Match": '"1"'}))
    response = await h.client.put(url, json={"content": "lost"}, headers={**alice, "If-Match": '"1"'})
    error = assert_error(response, 409, "conflict_error")
    assert error["details"]["current_version"] == 2
    assert error["details"]["expected_version"] == 1
    assert response.headers["etag"] == '"2"'
    # The same with the version in the body.
    error = assert_error(
        await h.client.put(url, json={"content": "lost", "version": 1}, headers=alice), 409, "conflict_error"
    )
    assert error["details"]["current_version"] == 2
    got = assert_ok(await h.client.get(url, headers=alice))
    assert (got["content"], got["version"]) == ("v2", 2)
    # Current version: accepted; "*" means any version.
    assert assert_ok(await h.client.put(url, json={"content": "v3", "version": 2}, headers=alice))["version"] == 3
    assert (
        assert_ok(await h.client.put(url, json={"content": "v4"}, headers={**alice, "If-Match": "*"}))["version"] == 4
    )


async def test_bad_if_match_is_400(h: Harness, alice: dict[str, str]) -> None:
    ctx = await create(h, alice)
    url = f"{API}/{ctx['id']}"
    for tag in ("abc", '"1", "2"', "0", '"1'):
        error = assert_error(
            await h.client.put(url, json={"content": "x"}, headers={**alice, "If-Match": tag}), 400, "validation_error"
        )
        assert field_names(error) == {"If-Match"}, tag
    error = assert_error(
        await h.client.put(url, json={"content": "x", "version": 2}, headers={**alice, "If-Match": "1"}),
        400,
        "validation_error",
    )
    assert field_names(error) == {"version"}


async def test_conditional_delete(h: Harness, alice: dict[str, str]) -> None:
    ctx = await create(h, alice)
    url = f"{API}/{ctx['id']}"
    assert_ok(await h.client.put(url, json={"content": "x"}, headers=alice))
    error = assert_error(await h.client.delete(url, headers={**alice, "If-Match": '"1"'}), 409, "conflict_error")
    assert error["details"]["current_version"] == 2
    assert_ok(await h.client.get(url, headers=alice))
    assert_ok(await h.client.delete(url, headers={**alice, "If-Match": '"2"'}))


async def test_concurrent_writes_with_the_same_version(h: Harness, alice: dict[str, str]) -> None:
    ctx = await create(h, alice, "original")
    url = f"{API}/{ctx['id']}"
    first, second = await asyncio.gather(
        h.client.put(url, json={"content": "first"}, headers={**alice, "If-Match": '"1"'}),
        h.client.put(url, json={"content": "second"}, headers={**alice, "If-Match": '"1"'}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
    winner, loser = (first, second) if first.status_code == 200 else (second, first)
    assert assert_error(loser, 409, "conflict_error")["details"]["current_version"] == 2
    won = assert_ok(winner)
    got = assert_ok(await h.client.get(url, headers=alice))
    assert got["content"] == won["content"]
    assert got["version"] == 2


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "", "content": "x"}, "type"),
        ({"type": "t" * 65, "content": "x"}, "type"),
        ({"type": "has space", "content": "x"}, "type"),
        ({"content": "x"}, "type"),
        ({"type": "note", "content": ""}, "content"),
        ({"type": "note", "content": "  \n\t "}, "content"),
        ({"type": "note"}, "content"),
        ({"type": "note", "content": "x", "metadata": [1, 2]}, "metadata"),
        ({"type": "note", "content": "x", "metadata": "a string"}, "metadata"),
        ({"type": "note", "content": "x", "metadata": 3}, "metadata"),
        ({"type": "note", "content": "x", "owner_id": "usr_x"}, "owner_id"),
    ],
)
async def test_create_rejects_bad_input(h: Harness, alice: dict[str, str], body: dict[str, Any], field: str) -> None:
    error = assert_error(await h.client.post(API, json=body, headers=alice), 400, "validation_error")
    assert field in field_names(error)
    assert await count(h, Context) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": "t" * 65}, "type"),
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"metadata": ["x"]}, "metadata"),
        ({"content": "x", "version": 0}, "version"),
    ],
)
async def test_update_rejects_bad_input(h: Harness, alice: dict[str, str], body: dict[str, Any], field: str) -> None:
    ctx = await create(h, alice)
    error = assert_error(await h.client.put(f"{API}/{ctx['id']}", json=body, headers=alice), 400, "validation_error")
    assert field in field_names(error)


async def test_content_over_the_limit_is_413(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url, context={"max_content_bytes": 100}) as h:
        who = h.auth((await h.user_with_key("alice"))[1])
        # 100 bytes exactly is fine; the limit counts UTF-8 bytes, not characters.
        ctx = await create(h, who, "x" * 100)
        for content in ("x" * 101, "é" * 51):
            response = await h.client.post(API, json={"type": "note", "content": content}, headers=who)
            error = assert_error(response, 413, "payload_too_large_error")
            assert field_names(error) == {"content"}
            assert error["details"]["max_bytes"] == 100
            response = await h.client.put(f"{API}/{ctx['id']}", json={"content": content}, headers=who)
            assert field_names(assert_error(response, 413, "payload_too_large_error")) == {"content"}
        assert await count(h, Context) == 1


# --- ownership -----------------------------------------------------------------------------------


async def test_another_users_context_is_not_found(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    mine = await create(h, alice, "alice's")
    other = await create(h, alice, "alice's other")
    theirs = await create(h, bob, "bob's")
    url = f"{API}/{mine['id']}"
    assert_error(await h.client.get(url, headers=bob), 404, "not_found_error")
    assert_error(await h.client.get(f"{url}/relationships", headers=bob), 404, "not_found_error")
    assert_error(await h.client.get(f"{url}/graph", headers=bob), 404, "not_found_error")
    # Writes are the owner's only: an administrator (who may read it, below) gets 404 too.
    for who in (bob, ADMIN):
        assert_error(await h.client.put(url, json={"content": "x"}, headers=who), 404, "not_found_error")
        assert_error(await h.client.delete(url, headers=who), 404, "not_found_error")
        body = {"target_context_id": other["id"], "relationship_type": "x"}
        assert_error(await h.client.post(f"{url}/relationships", json=body, headers=who), 404, "not_found_error")
    # Nor can a relationship point at another user's context.
    body = {"target_context_id": mine["id"], "relationship_type": "x"}
    response = await h.client.post(f"{API}/{theirs['id']}/relationships", json=body, headers=bob)
    assert assert_error(response, 404, "not_found_error")["details"]["id"] == mine["id"]
    # The answer for a foreign id is the answer for a missing one.
    missing = await h.client.get(f"{API}/ctx_{'0' * 32}", headers=bob)
    foreign = await h.client.get(url, headers=bob)
    assert missing.json()["error"]["message"] == foreign.json()["error"]["message"]
    got = assert_ok(await h.client.get(url, headers=alice))
    assert (got["content"], got["version"]) == ("alice's", 1)
    assert await count(h, ContextRelationship) == 0


async def test_an_admin_reads_another_users_context_its_relationships_and_graph(
    h: Harness, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """Issue 16: administrators see everything, contexts included; writes stay the owner's."""
    mine = await create(h, alice, "alice's")
    other = await create(h, alice, "alice's other")
    body = {"target_context_id": other["id"], "relationship_type": "refines"}
    assert_ok(await h.client.post(f"{API}/{mine['id']}/relationships", json=body, headers=alice), 201)
    url = f"{API}/{mine['id']}"
    got = assert_ok(await h.client.get(url, headers=ADMIN))
    assert (got["content"], got["owner_id"]) == ("alice's", mine["owner_id"])
    edges = assert_ok(await h.client.get(f"{url}/relationships", headers=ADMIN))
    assert [e["target_id"] for e in edges] == [other["id"]]
    graph = assert_ok(await h.client.get(f"{url}/graph", headers=ADMIN))
    assert {n["id"] for n in graph["nodes"]} == {mine["id"], other["id"]}
    assert len(graph["edges"]) == 1
    # The relationship an admin may read, it may not delete.
    edge_id = edges[0]["id"]
    response = await h.client.delete(f"{url}/relationships/{edge_id}", headers=ADMIN)
    assert_error(response, 404, "not_found_error")
    assert await count(h, ContextRelationship) == 1
    assert assert_ok(await h.client.get(url, headers=alice))["version"] == 1


# --- relationships -------------------------------------------------------------------------------


async def test_relationships_both_directions(h: Harness, alice: dict[str, str]) -> None:
    a = await create(h, alice, "a")
    b = await create(h, alice, "b")
    c = await create(h, alice, "c")
    ab = await link(h, alice, a["id"], b["id"], "depends_on")
    ca = await link(h, alice, c["id"], a["id"], "implements")
    ab2 = await link(h, alice, a["id"], b["id"], "mentions")  # same pair, another type: fine
    assert ab["direction"] == "outgoing"
    assert (ab["source_id"], ab["target_id"], ab["strength"]) == (a["id"], b["id"], 0.5)

    listed = assert_ok(await h.client.get(f"{API}/{a['id']}/relationships", headers=alice))
    assert [(r["id"], r["direction"]) for r in listed] == [
        (ab["id"], "outgoing"),
        (ca["id"], "incoming"),
        (ab2["id"], "outgoing"),
    ]
    params: dict[str, str] = {"relationship_type": "implements"}
    only = assert_ok(await h.client.get(f"{API}/{a['id']}/relationships", params=params, headers=alice))
    assert [r["id"] for r in only] == [ca["id"]]
    outgoing = assert_ok(
        await h.client.get(f"{API}/{a['id']}/relationships", params={"direction": "outgoing"}, headers=alice)
    )
    assert [r["id"] for r in outgoing] == [ab["id"], ab2["id"]]
    from_b = assert_ok(await h.client.get(f"{API}/{b['id']}/relationships", headers=alice))
    assert {r["direction"] for r in from_b} == {"incoming"}

    # Delete from either end; a relationship not touching the context is not found there.
    assert_error(
        await h.client.delete(f"{API}/{c['id']}/relationships/{ab['id']}", headers=alice), 404, "not_found_error"
    )
    assert (
        assert_ok(await h.client.delete(f"{API}/{b['id']}/relationships/{ab['id']}", headers=alice))["id"] == ab["id"]
    )
    assert_error(
        await h.client.delete(f"{API}/{a['id']}/relationships/{ab['id']}", headers=alice), 404, "not_found_error"
    )
    left = assert_ok(await h.client.get(f"{API}/{a['id']}/relationships", headers=alice))
    assert [r["id"] for r in left] == [ca["id"], ab2["id"]]


async def test_relationship_rules(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    a = await create(h, alice, "a")
    b = await create(h, alice, "b")
    url = f"{API}/{a['id']}/relationships"

    def body(**fields: Any) -> dict[str, Any]:
        return {"target_context_id": b["id"], "relationship_type": "depends_on", "strength": 0.7, **fields}

    error = assert_error(
        await h.client.post(url, json=body(target_context_id=a["id"]), headers=alice), 400, "validation_error"
    )
    assert field_names(error) == {"target_context_id"}
    for strength in (-0.1, 1.01, 2, "high"):
        error = assert_error(
            await h.client.post(url, json=body(strength=strength), headers=alice), 400, "validation_error"
        )
        assert field_names(error) == {"strength"}, strength
    for kind in ("", "k" * 65, "not ok"):
        error = assert_error(
            await h.client.post(url, json=body(relationship_type=kind), headers=alice), 400, "validation_error"
        )
        assert field_names(error) == {"relationship_type"}, kind
    error = assert_error(
        await h.client.post(url, json=body(target_context_id=f"ctx_{'0' * 32}"), headers=alice), 404, "not_found_error"
    )
    assert error["details"]["field"] == "target_context_id"
    assert_error(
        await h.client.post(f"{API}/ctx_nope/relationships", json=body(), headers=alice), 404, "not_found_error"
    )

    # Strength 0 and 1 are inside the range; the default is 1.
    edge = assert_ok(await h.client.post(url, json=body(strength=0), headers=alice), 201)
    assert edge["strength"] == 0
    error = assert_error(await h.client.post(url, json=body(strength=1), headers=alice), 409, "conflict_error")
    assert error["details"]["relationship_id"] == edge["id"]
    default = {"target_context_id": b["id"], "relationship_type": "other"}
    assert assert_ok(await h.client.post(url, json=default, headers=alice), 201)["strength"] == 1
    assert await count(h, ContextRelationship) == 2


async def test_deleting_a_context_removes_its_relationships(h: Harness, alice: dict[str, str]) -> None:
    a = await create(h, alice, "a")
    b = await create(h, alice, "b")
    c = await create(h, alice, "c")
    await link(h, alice, a["id"], b["id"])
    await link(h, alice, c["id"], a["id"])
    bc = await link(h, alice, b["id"], c["id"])
    deleted = assert_ok(await h.client.delete(f"{API}/{a['id']}", headers=alice))
    assert deleted["relationships_removed"] == 2
    async with h.runtime.database.session() as session:
        touching = select(func.count()).where(
            or_(ContextRelationship.source_id == a["id"], ContextRelationship.target_id == a["id"])
        )
        assert (await session.execute(touching)).scalar_one() == 0
    assert [r["id"] for r in assert_ok(await h.client.get(f"{API}/{b['id']}/relationships", headers=alice))] == [
        bc["id"]
    ]
    assert [r["id"] for r in assert_ok(await h.client.get(f"{API}/{c['id']}/relationships", headers=alice))] == [
        bc["id"]
    ]


async def test_create_with_relationships_is_atomic(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    b = await create(h, alice, "b")
    c = await create(h, alice, "c")
    bobs = await create(h, bob, "bob's")
    for bad in (f"ctx_{'0' * 32}", bobs["id"]):
        links = [
            {"target_context_id": b["id"], "relationship_type": "depends_on"},
            {"target_context_id": bad, "relationship_type": "depends_on"},
        ]
        response = await h.client.post(
            API, json={"type": "note", "content": "a", "relationships": links}, headers=alice
        )
        error = assert_error(response, 404, "not_found_error")
        assert error["details"]["field"] == "relationships.1.target_context_id"
    assert await count(h, Context) == 3
    assert await count(h, ContextRelationship) == 0
    # Duplicates within one request are refused the same way, before anything is written.
    dupes = [{"target_context_id": b["id"], "relationship_type": "x"}] * 2
    response = await h.client.post(API, json={"type": "note", "content": "a", "relationships": dupes}, headers=alice)
    assert field_names(assert_error(response, 400, "validation_error")) == {"relationships.1"}
    bad_strength = [{"target_context_id": b["id"], "relationship_type": "x", "strength": 3}]
    response = await h.client.post(
        API, json={"type": "note", "content": "a", "relationships": bad_strength}, headers=alice
    )
    assert field_names(assert_error(response, 400, "validation_error")) == {"relationships.0.strength"}
    assert await count(h, Context) == 3

    links = [
        {"target_context_id": b["id"], "relationship_type": "depends_on", "strength": 0.25},
        {"target_context_id": c["id"], "relationship_type": "mentions"},
    ]
    a = await create(h, alice, "a", relationships=links)
    assert [(r["target_id"], r["relationship_type"], r["strength"], r["direction"]) for r in a["relationships"]] == [
        (b["id"], "depends_on", 0.25, "outgoing"),
        (c["id"], "mentions", 1.0, "outgoing"),
    ]
    incoming = assert_ok(await h.client.get(f"{API}/{b['id']}/relationships", headers=alice))
    assert [(r["source_id"], r["direction"]) for r in incoming] == [(a["id"], "incoming")]


# --- graph ---------------------------------------------------------------------------------------


async def test_graph_depths_cycles_and_type_filter(h: Harness, alice: dict[str, str]) -> None:
    #   a -> b -> c -> a (a cycle), c -> d -> e; a -> x is of another type.
    ids = {
        name: (await create(h, alice, f"content of {name}", type="code" if name == "x" else "note"))["id"]
        for name in "abcdex"
    }
    edge = {}
    for source, target, kind in [
        ("a", "b", "next"),
        ("b", "c", "next"),
        ("c", "a", "next"),
        ("c", "d", "next"),
        ("d", "e", "next"),
        ("a", "x", "mentions"),
    ]:
        edge[source + target] = (await link(h, alice, ids[source], ids[target], kind))["id"]
    name_of = {v: k for k, v in ids.items()}

    async def graph(**params: Any) -> dict[str, Any]:
        data: dict[str, Any] = assert_ok(await h.client.get(f"{API}/{ids['a']}/graph", params=params, headers=alice))
        return data

    def shape(g: dict[str, Any]) -> tuple[dict[str, int], set[str]]:
        nodes = {name_of[n["id"]]: n["depth"] for n in g["nodes"]}
        edges = {name_of[e["source_id"]] + name_of[e["target_id"]] for e in g["edges"]}
        return nodes, edges

    one = await graph(depth=1)
    assert one["root"] == ids["a"]
    assert one["truncated"] is False
    assert one["nodes"][0]["id"] == ids["a"]
    assert shape(one) == ({"a": 0, "b": 1, "c": 1, "x": 1}, {"ab", "ca", "ax"})
    node_x = next(n for n in one["nodes"] if n["id"] == ids["x"])
    assert node_x == {"id": ids["x"], "type": "code", "depth": 1, "content_preview": "content of x", "metadata": {}}

    assert shape(await graph()) == ({"a": 0, "b": 1, "c": 1, "x": 1, "d": 2}, {"ab", "ca", "ax", "bc", "cd"})
    assert shape(await graph(depth=3))[0] == {"a": 0, "b": 1, "c": 1, "x": 1, "d": 2, "e": 3}
    # The cycle is visited once; a deeper request finds nothing more.
    five = await graph(depth=5)
    assert len(five["nodes"]) == 6
    assert len(five["edges"]) == 6

    typed = await graph(depth=5, relationship_type="mentions")
    assert shape(typed) == ({"a": 0, "x": 1}, {"ax"})
    assert typed["relationship_type"] == "mentions"
    assert shape(await graph(depth=5, relationship_type="nothing")) == ({"a": 0}, set())

    for depth in (0, 6, -1):
        error = assert_error(
            await h.client.get(f"{API}/{ids['a']}/graph", params={"depth": depth}, headers=alice),
            400,
            "validation_error",
        )
        assert field_names(error) == {"depth"}, depth


async def test_graph_node_limit_and_preview(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url, context={"max_graph_nodes": 3, "max_graph_depth": 2}) as h:
        who = h.auth((await h.user_with_key("alice"))[1])
        root = await create(h, who, "r" * 500)
        for i in range(4):
            leaf = await create(h, who, f"leaf {i}")
            await link(h, who, root["id"], leaf["id"])
        g = assert_ok(await h.client.get(f"{API}/{root['id']}/graph", headers=who))
        assert g["truncated"] is True
        assert len(g["nodes"]) == 3
        ids = {n["id"] for n in g["nodes"]}
        assert all(e["source_id"] in ids and e["target_id"] in ids for e in g["edges"])
        assert len(g["edges"]) == 2
        preview = g["nodes"][0]["content_preview"]
        assert len(preview) == 200
        assert preview.endswith("…")
        response = await h.client.get(f"{API}/{root['id']}/graph", params={"depth": 3}, headers=who)
        assert field_names(assert_error(response, 400, "validation_error")) == {"depth"}
