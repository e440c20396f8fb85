"""/api/v1/db/vectors: collections, items (vectors or text embedded by the local model), queries
with filters — on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import Harness
from trellis.settings import Role
from trellis.vectors.models import VectorItem

API = "/api/v1/db/vectors/collections"


async def make(h: Harness, who: dict[str, str], name: str = "points", dimensions: int = 3, **body: Any) -> Any:
    response = await h.client.post(API, json={"name": name, "dimensions": dimensions, **body}, headers=who)
    return assert_ok(response, 201)


async def put(h: Harness, who: dict[str, str], name: str, items: list[dict[str, Any]]) -> Any:
    return assert_ok(await h.client.put(f"{API}/{name}/items", json={"items": items}, headers=who))


async def query(h: Harness, who: dict[str, str], name: str, **body: Any) -> Any:
    return assert_ok(await h.client.post(f"{API}/{name}/query", json=body, headers=who))


async def item_rows(h: Harness) -> int:
    async with h.runtime.database.session() as session:
        return int((await session.execute(select(func.count()).select_from(VectorItem))).scalar_one())


# --- collections ---------------------------------------------------------------------------------


async def test_create_list_get_delete(h: Harness, alice: dict[str, str]) -> None:
    created = await make(h, alice, "points", 3)
    assert created["name"] == "points"
    assert created["dimensions"] == 3
    assert created["model"] is None
    assert created["metric"] == "cosine"
    assert created["item_count"] == 0
    assert created["id"].startswith("vcol_")
    await make(h, alice, "docs", 384, model="minilm-l6")
    listed = assert_ok(await h.client.get(API, headers=alice))
    assert [c["name"] for c in listed] == ["docs", "points"]
    await put(h, alice, "points", [{"id": "a", "vector": [1, 0, 0]}, {"id": "b", "vector": [0, 1, 0]}])
    got = assert_ok(await h.client.get(f"{API}/points", headers=alice))
    assert got["item_count"] == 2
    assert {c["name"]: c["item_count"] for c in assert_ok(await h.client.get(API, headers=alice))} == {
        "docs": 0,
        "points": 2,
    }
    deleted = assert_ok(await h.client.delete(f"{API}/points", headers=alice))
    assert deleted == {"name": "points", "deleted": True, "items_removed": 2}
    assert await item_rows(h) == 0
    assert_error(await h.client.get(f"{API}/points", headers=alice), 404, "not_found_error")
    assert_error(await h.client.delete(f"{API}/points", headers=alice), 404, "not_found_error")


async def test_model_names_resolve_to_the_canonical_model(h: Harness, alice: dict[str, str]) -> None:
    created = await make(h, alice, "docs", 384, model="minilm-l6")
    assert created["model"] == "minilm-l6"
    error = assert_error(
        await h.client.post(API, json={"name": "x", "dimensions": 3, "model": "no-such-model"}, headers=alice),
        400,
        "validation_error",
    )
    assert field_names(error) == {"model"}
    error = assert_error(
        await h.client.post(API, json={"name": "x", "dimensions": 3, "model": "smollm2-135m"}, headers=alice),
        400,
        "validation_error",
    )
    assert "model" in field_names(error)  # a chat model cannot embed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "dimensions": 3}, "name"),
        ({"name": "has space", "dimensions": 3}, "name"),
        ({"name": "x" * 101, "dimensions": 3}, "name"),
        ({"name": "ok", "dimensions": 0}, "dimensions"),
        ({"name": "ok", "dimensions": 4097}, "dimensions"),
        ({"name": "ok"}, "dimensions"),
        ({"name": "ok", "dimensions": 3, "metric": "l2"}, "metric"),
    ],
)
async def test_bad_collections_are_400_naming_the_field(
    h: Harness, alice: dict[str, str], body: dict[str, Any], field: str
) -> None:
    error = assert_error(await h.client.post(API, json=body, headers=alice), 400, "validation_error")
    assert field in field_names(error), error


async def test_names_are_unique_per_user(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    await make(h, alice, "points")
    assert_error(
        await h.client.post(API, json={"name": "points", "dimensions": 3}, headers=alice), 409, "conflict_error"
    )
    await make(h, bob, "points", 2)  # bob's own, independent


# --- ownership ---------------------------------------------------------------------------------


async def test_another_users_collection_is_a_404(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    await make(h, alice, "secret")
    await put(h, alice, "secret", [{"id": "a", "vector": [1, 0, 0]}])
    for response in (
        await h.client.get(f"{API}/secret", headers=bob),
        await h.client.put(f"{API}/secret/items", json={"items": [{"id": "x", "vector": [1, 0, 0]}]}, headers=bob),
        await h.client.post(f"{API}/secret/query", json={"vector": [1, 0, 0]}, headers=bob),
        await h.client.get(f"{API}/secret/items/a", headers=bob),
        await h.client.post(f"{API}/secret/items/delete", json={"ids": ["a"]}, headers=bob),
        await h.client.delete(f"{API}/secret/items/a", headers=bob),
        await h.client.delete(f"{API}/secret", headers=bob),
        await h.client.get(f"{API}/nothing", headers=alice),
    ):
        assert_error(response, 404, "not_found_error")
    assert assert_ok(await h.client.get(API, headers=bob)) == []
    assert (await query(h, alice, "secret", vector=[1, 0, 0]))["hits"][0]["id"] == "a"


async def test_viewers_query_but_do_not_write(h: Harness, alice: dict[str, str]) -> None:
    viewer_id = await h.create_user("vera", Role.VIEWER)
    _, key = await h.create_key(viewer_id)
    vera = h.auth(key)
    assert_error(
        await h.client.post(API, json={"name": "v", "dimensions": 2}, headers=vera), 403, "authorization_error"
    )
    assert assert_ok(await h.client.get(API, headers=vera)) == []
    assert_error(await h.client.get(API), 401, "authentication_error")


# --- items ---------------------------------------------------------------------------------------


async def test_upsert_replaces_and_items_can_be_read_and_deleted(h: Harness, alice: dict[str, str]) -> None:
    await make(h, alice, "points")
    done = await put(
        h,
        alice,
        "points",
        [{"id": "a", "vector": [1, 0, 0], "metadata": {"n": 1}}, {"id": "b", "vector": [0, 1, 0]}],
    )
    assert done == {"upserted": 2, "ids": ["a", "b"]}
    replaced = await h.client.post(
        f"{API}/points/items", json={"items": [{"id": "a", "vector": [0, 0, 2], "metadata": {"n": 2}}]}, headers=alice
    )
    assert assert_ok(replaced)["upserted"] == 1
    item = assert_ok(await h.client.get(f"{API}/points/items/a", headers=alice))
    assert item["vector"] == [0, 0, 2]
    assert item["metadata"] == {"n": 2}
    assert item["text"] is None
    assert (await query(h, alice, "points", vector=[0, 0, 1], top_k=1))["hits"][0]["id"] == "a"
    assert assert_ok(await h.client.get(f"{API}/points", headers=alice))["item_count"] == 2

    deleted = await h.client.post(f"{API}/points/items/delete", json={"ids": ["a", "zzz"]}, headers=alice)
    assert assert_ok(deleted) == {"deleted": 1}
    assert_error(await h.client.get(f"{API}/points/items/a", headers=alice), 404, "not_found_error")
    assert assert_ok(await h.client.delete(f"{API}/points/items/b", headers=alice)) == {"deleted": 1}
    assert assert_ok(await h.client.delete(f"{API}/points/items/b", headers=alice)) == {"deleted": 0}
    assert await item_rows(h) == 0


async def test_dimension_mismatch_names_the_item(h: Harness, alice: dict[str, str]) -> None:
    await make(h, alice, "points")
    items = [{"id": "good", "vector": [1, 0, 0]}, {"id": "short", "vector": [1, 0]}]
    response = await h.client.put(f"{API}/points/items", json={"items": items}, headers=alice)
    error = assert_error(response, 400, "validation_error")
    assert field_names(error) == {"items.1.vector"}
    assert "'short'" in error["message"]
    assert await item_rows(h) == 0  # all or nothing


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"id": "a"}], "items.0"),
        ([{"id": "a", "vector": [1, 0, 0], "text": "both"}], "items.0"),
        ([{"vector": [1, 0, 0]}], "items.0.id"),
        ([{"id": "", "vector": [1, 0, 0]}], "items.0.id"),
        ([{"id": "a", "vector": []}], "items.0.vector"),
        ([{"id": "a", "vector": ["x", 0, 0]}], "items.0.vector.0"),
        ([{"id": "a", "vector": [1, 0, 0], "extra": 1}], "items.0.extra"),
        ([{"id": "a", "vector": [1, 0, 0]}, {"id": "a", "vector": [0, 1, 0]}], "items.1.id"),
        ([], "items"),
        ([{"id": "a", "text": "no model to embed this"}], "items.0.text"),
    ],
)
async def test_bad_items_are_400_naming_the_item(
    h: Harness, alice: dict[str, str], items: list[dict[str, Any]], field: str
) -> None:
    await make(h, alice, "points")
    response = await h.client.put(f"{API}/points/items", json={"items": items}, headers=alice)
    error = assert_error(response, 400, "validation_error")
    assert field in field_names(error), error


async def test_items_for_an_unknown_collection_are_a_404(h: Harness, alice: dict[str, str]) -> None:
    response = await h.client.put(f"{API}/nope/items", json={"items": [{"id": "a", "vector": [1]}]}, headers=alice)
    assert_error(response, 404, "not_found_error")


# --- queries -----------------------------------------------------------------------------------


async def test_vector_query_is_exact_cosine_top_k(h: Harness, alice: dict[str, str]) -> None:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    await make(h, alice, "random", 8)
    await put(
        h,
        alice,
        "random",
        [{"id": f"i{i}", "vector": v.tolist(), "metadata": {"even": i % 2 == 0}} for i, v in enumerate(vectors)],
    )
    wanted = rng.standard_normal(8).astype(np.float32)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = normed @ (wanted / np.linalg.norm(wanted))
    expected = sorted(range(50), key=lambda i: -scores[i])[:7]

    result = await query(h, alice, "random", vector=wanted.tolist(), top_k=7)
    assert result["collection"] == "random"
    assert result["model"] is None
    assert [hit["id"] for hit in result["hits"]] == [f"i{i}" for i in expected]
    for hit, i in zip(result["hits"], expected, strict=True):
        assert hit["score"] == pytest.approx(float(scores[i]), abs=1e-5)
        assert hit["vector"] is None
        assert hit["metadata"] == {"even": i % 2 == 0}

    evens = await query(h, alice, "random", vector=wanted.tolist(), top_k=7, filter={"even": True})
    expected_evens = sorted((i for i in range(50) if i % 2 == 0), key=lambda i: -scores[i])[:7]
    assert [hit["id"] for hit in evens["hits"]] == [f"i{i}" for i in expected_evens]

    with_vectors = await query(h, alice, "random", vector=wanted.tolist(), top_k=1, include_vectors=True)
    assert with_vectors["hits"][0]["vector"] == pytest.approx(vectors[expected[0]].tolist(), abs=1e-6)


async def test_metadata_filters(h: Harness, alice: dict[str, str]) -> None:
    await make(h, alice, "tagged", 2)
    await put(
        h,
        alice,
        "tagged",
        [
            {"id": "en1", "vector": [1, 0], "metadata": {"lang": "en", "year": 2024}},
            {"id": "en2", "vector": [0.9, 0.1], "metadata": {"lang": "en", "year": "2024"}},
            {"id": "fr", "vector": [0.8, 0.2], "metadata": {"lang": "fr", "year": 2023}},
            {"id": "bare", "vector": [0.7, 0.3]},
        ],
    )

    async def ids(**flt: Any) -> set[str]:
        return {hit["id"] for hit in (await query(h, alice, "tagged", vector=[1, 0], top_k=10, filter=flt))["hits"]}

    assert await ids() == {"en1", "en2", "fr", "bare"}
    assert await ids(lang="en") == {"en1", "en2"}
    assert await ids(lang=["en", "fr"]) == {"en1", "en2", "fr"}
    assert await ids(year=2024) == {"en1"}
    assert await ids(year="2024") == {"en2"}
    assert await ids(lang="en", year=2024) == {"en1"}
    assert await ids(lang="de") == set()
    for flt, field in (({"bad key": 1}, "filter.bad key"), ({"lang": {"nested": 1}}, "filter.lang")):
        response = await h.client.post(f"{API}/tagged/query", json={"vector": [1, 0], "filter": flt}, headers=alice)
        assert field in field_names(assert_error(response, 400, "validation_error"))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"vector": [1, 0, 0], "top_k": 0}, "top_k"),
        ({"vector": [1, 0, 0], "top_k": 101}, "top_k"),
        ({"vector": [1, 0]}, "vector"),
        ({}, ""),
        ({"vector": [1, 0, 0], "text": "both"}, ""),
        ({"text": "no model"}, "text"),
    ],
)
async def test_bad_queries_are_400(h: Harness, alice: dict[str, str], body: dict[str, Any], field: str) -> None:
    await make(h, alice, "points")
    await put(h, alice, "points", [{"id": "a", "vector": [1, 0, 0]}])
    error = assert_error(await h.client.post(f"{API}/points/query", json=body, headers=alice), 400, "validation_error")
    if field:
        assert field in field_names(error), error


async def test_text_items_and_queries_use_the_collections_model(h: Harness, alice: dict[str, str]) -> None:
    await make(h, alice, "notes", 384, model="minilm-l6")
    await put(
        h,
        alice,
        "notes",
        [
            {"id": "bread", "text": "Sourdough bread rises slowly with a wild yeast starter.", "metadata": {"k": 1}},
            {"id": "deploy", "text": "Deploy the API with docker compose on the server."},
            {"id": "garden", "text": "Water the tomato plants every morning in summer."},
            {"id": "raw", "vector": [0.01] * 384},
        ],
    )
    item = assert_ok(await h.client.get(f"{API}/notes/items/bread", headers=alice))
    assert item["text"].startswith("Sourdough")
    assert len(item["vector"]) == 384
    assert float(np.linalg.norm(item["vector"])) == pytest.approx(1.0, abs=1e-3)

    result = await query(h, alice, "notes", text="baking a loaf", top_k=2)
    assert result["model"] == "minilm-l6"
    assert result["hits"][0]["id"] == "bread"
    assert result["hits"][0]["text"].startswith("Sourdough")
    assert (await query(h, alice, "notes", text="containers in production", top_k=1))["hits"][0]["id"] == "deploy"

    # A model whose vectors do not fit the collection: the item is named.
    await make(h, alice, "tiny", 3, model="minilm-l6")
    response = await h.client.put(
        f"{API}/tiny/items",
        json={"items": [{"id": "v", "vector": [1, 2, 3]}, {"id": "t", "text": "some text"}]},
        headers=alice,
    )
    error = assert_error(response, 400, "validation_error")
    assert field_names(error) == {"items.1.text"}
    assert "'t'" in error["message"]
    assert "384" in error["message"]
