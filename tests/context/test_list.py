"""GET /api/context and `trellis context list`: one's own contexts, filtered, sorted, keyset-paged —
on SQLite and PostgreSQL. (The probe's finding: the owner of a poisoned record could not find it.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, Harness
from tests.graphql.support import data_of, error_of, gql

API = "/api/context"
ADMIN = Harness.auth(ADMIN_KEY)


async def make(h: Harness, who: dict[str, str], content: str, type_: str = "note", **metadata: Any) -> str:
    h.clock.advance(1)  # distinct, known timestamps: the test clock moves only when told to
    body = {"type": type_, "content": content, "metadata": metadata}
    data = assert_ok(await h.client.post(API, json=body, headers=who), 201)
    context_id: str = data["id"]
    return context_id


async def page(h: Harness, who: dict[str, str], **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(await h.client.get(API, params=params, headers=who))
    return data


async def walk(h: Harness, who: dict[str, str], **params: Any) -> list[str]:
    """Every id, following next_cursor page by page."""
    seen: list[str] = []
    for _ in range(50):
        data = await page(h, who, **params)
        seen.extend(item["id"] for item in data["items"])
        if data["next_cursor"] is None:
            return seen
        params["cursor"] = data["next_cursor"]
    raise AssertionError("the cursor never ended")


async def test_lists_only_ones_own_newest_first(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    first = await make(h, alice, "one")
    second = await make(h, alice, "two")
    await make(h, bob, "bob's")
    data = await page(h, alice)
    assert [item["id"] for item in data["items"]] == [second, first]
    assert data["next_cursor"] is None
    assert data["items"][0]["content"] == "two"
    # An administrator's default list is their own, as before.
    assert (await page(h, ADMIN))["items"] == []


async def test_owner_filter_for_admins_only(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    """Issue 16: an administrator lists one user's contexts (``owner``) or everyone's (``all``)."""
    alices = await make(h, alice, "one")
    bobs = await make(h, bob, "bob's")
    alice_id = assert_ok(await h.client.get(f"{API}/{alices}", headers=alice))["owner_id"]
    assert {item["id"] for item in (await page(h, ADMIN, owner="all"))["items"]} == {alices, bobs}
    by_alice = (await page(h, ADMIN, owner=alice_id))["items"]
    assert [(item["id"], item["owner_id"]) for item in by_alice] == [(alices, alice_id)]
    assert (await page(h, ADMIN, owner="usr_nobody"))["items"] == []
    assert await walk(h, ADMIN, owner="all", limit=1) == [bobs, alices]  # pages across owners
    assert [item["id"] for item in (await page(h, alice, owner=alice_id))["items"]] == [alices]
    for owner in ("all", "usr_nobody"):
        response = await h.client.get(API, params={"owner": owner}, headers=bob)
        assert assert_error(response, 403, "authorization_error")["details"]["owner"] == owner
    assert_error(await h.client.get(API, params={"owner": "x" * 65}, headers=ADMIN), 400, "validation_error")


async def test_sort_and_keyset_pages(h: Harness, alice: dict[str, str]) -> None:
    ids = [await make(h, alice, f"note {n}") for n in range(7)]
    assert await walk(h, alice, limit=3) == ids[::-1]
    assert await walk(h, alice, limit=2, sort="created") == ids
    assert await walk(h, alice, limit=3, sort="-created") == ids[::-1]
    # Updating the oldest moves it first by -updated, not by -created.
    h.clock.advance(1)
    assert_ok(await h.client.put(f"{API}/{ids[0]}", json={"content": "edited"}, headers=alice))
    assert (await walk(h, alice, limit=4))[0] == ids[0]
    assert (await walk(h, alice, limit=4, sort="-created"))[0] == ids[-1]
    # A row inserted while paging does not shift the pages after the cursor.
    data = await page(h, alice, limit=3, sort="created")
    await make(h, alice, "late")
    rest = await walk(h, alice, limit=3, sort="created", cursor=data["next_cursor"])
    assert [item["id"] for item in data["items"]] + rest[:4] == ids


async def test_filters(h: Harness, alice: dict[str, str]) -> None:
    note = await make(h, alice, "a note", "note", lang="en", year=2024)
    decision = await make(h, alice, "a decision", "decision", lang="fr")
    code = await make(h, alice, "some code", "code", lang="en")
    ids = lambda data: [item["id"] for item in data["items"]]  # noqa: E731
    assert ids(await page(h, alice, type="note,decision")) == [decision, note]
    assert ids(await page(h, alice, **{"metadata.lang": "en"})) == [code, note]
    assert ids(await page(h, alice, **{"metadata.lang": "en", "type": "note"})) == [note]
    assert ids(await page(h, alice, **{"metadata.year": "2024"})) == [note]
    everything = (await page(h, alice, sort="created"))["items"]
    second_created = everything[1]["created_at"]
    assert ids(await page(h, alice, created_after=second_created)) == [code, decision]
    assert ids(await page(h, alice, created_before=second_created)) == [note]
    assert ids(await page(h, alice, updated_after=second_created, updated_before=everything[2]["created_at"])) == [
        decision
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "size"}, "sort"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"type": "no spaces"}, "type"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-01-02T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"}, "created_before"),
        ({"metadata.bad key": "x"}, "metadata.bad key"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    h: Harness, alice: dict[str, str], params: dict[str, Any], field: str
) -> None:
    error = assert_error(await h.client.get(API, params=params, headers=alice), 400, "validation_error")
    assert field_names(error) == {field}


async def test_a_cursor_is_tied_to_its_sort(h: Harness, alice: dict[str, str]) -> None:
    for n in range(3):
        await make(h, alice, f"n{n}")
    cursor = (await page(h, alice, limit=1, sort="created"))["next_cursor"]
    assert cursor
    error = assert_error(await h.client.get(API, params={"cursor": cursor}, headers=alice), 400, "validation_error")
    assert field_names(error) == {"cursor"}


async def test_needs_a_credential(h: Harness) -> None:
    assert_error(await h.client.get(API), 401, "authentication_error")


async def test_graphql_contexts_follow_the_same_rules(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    alices = await make(h, alice, "one")
    listing = "query($owner: String) { contexts(owner: $owner) { edges { node { id content } } } }"
    nodes = data_of(await gql(h, listing, {"owner": "all"}, headers=ADMIN))["contexts"]["edges"]
    assert [edge["node"] for edge in nodes] == [{"id": alices, "content": "one"}]
    error_of(await gql(h, listing, {"owner": "all"}, headers=bob), "authorization_error")
    one = "query($id: ID!) { context(id: $id) { id content } }"
    assert data_of(await gql(h, one, {"id": alices}, headers=ADMIN))["context"] == {"id": alices, "content": "one"}
    error_of(await gql(h, one, {"id": alices}, headers=bob), "not_found_error")
