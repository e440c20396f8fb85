"""Lone surrogates: refused at the edge on every JSON route, naming the field, before anything is
written; and a record stored by an older version stays readable, searchable and deletable.

The probe's reproduction: ``POST /api/context`` with ``"metadata": {"k": "\\ud800"}`` answered 500
after committing the row, and every later read of it answered 500 too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.conftest import ADMIN_KEY, Harness
from trellis.context.models import Context
from trellis.kit.unicode import lone_surrogate_path, may_hold_lone_surrogates, replace_lone_surrogates

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
LONE = '"\\ud800"'  # a JSON string holding one lone surrogate, as the client sends it


def json_routes(harness: Harness) -> list[tuple[str, str]]:
    """(method, path) of every operation whose body is JSON, path parameters filled with a plain id."""
    routes = []
    for path, operations in harness.app.openapi()["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                routes.append((method.upper(), path.replace("{", "").replace("}", "")))
    return routes


async def test_every_json_route_refuses_a_lone_surrogate_naming_the_field(harness: Harness) -> None:
    routes = json_routes(harness)
    # The sweep covers the whole API, not a sample: auth, users, keys, ai, /v1, context, vectors.
    assert len(routes) >= 18
    assert {"/api/context", "/v1/chat/completions", "/v1/embeddings", "/api/v1/ai/chat"} <= {p for _, p in routes}
    for method, path in routes:
        body = f'{{"probe": {{"nested": [1, {LONE}]}}}}'.encode()
        response = await harness.client.request(method, path, content=body, headers=AUTH)
        assert response.status_code == 400, (method, path, response.text)
        payload = response.json()
        if path.startswith("/v1/"):
            # The OpenAI door keeps OpenAI's shape, so SDKs raise BadRequestError.
            assert payload["error"]["code"] == "validation_error", path
            assert payload["error"]["param"] == "probe.nested.1", path
        else:
            assert payload["success"] is False, path
            [field] = payload["error"]["details"]["fields"]
            assert field == {
                "field": "probe.nested.1",
                "message": field["message"],
                "location": "body",
                "type": "string_unicode",
            }, path
            assert "surrogate" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"type": "note", "content": "x", "metadata": {"k": "\\ud800"}}', "metadata.k"),
        ('{"type": "note", "content": "\\ud800"}', "content"),
        ('{"type": "note", "content": "x", "metadata": {"\\udc00": 1}}', "metadata.\ufffd"),
        ('{"type": "note", "content": "x", "metadata": {"k": "\xed\xa0\x80"}}', "metadata.k"),
    ],
)
async def test_nothing_is_written(harness: Harness, body: str, field: str) -> None:
    raw = body.encode("latin-1") if "\xed" in body else body.encode()
    response = await harness.client.post("/api/context", content=raw, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["fields"][0]["field"] == field
    async with harness.runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(Context))).scalar_one() == 0


async def test_paired_surrogates_and_escaped_backslashes_pass(harness: Harness) -> None:
    body = '{"type": "note", "content": "smile \\ud83d\\ude00 and a literal \\\\ud800", "metadata": {}}'
    response = await harness.client.post("/api/context", content=body.encode(), headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["content"] == "smile \U0001f600 and a literal \\ud800"


async def test_a_record_stored_before_stays_readable_and_deletable(harness: Harness) -> None:
    created = await harness.client.post(
        "/api/context",
        json={"type": "note", "content": "poisoned by an older version", "metadata": {"k": "v"}},
        headers=AUTH,
    )
    assert created.status_code == 201, created.text
    context_id = created.json()["data"]["id"]
    # What an older version let in: the JSON text of a lone surrogate, in the row.
    async with harness.runtime.database.transaction() as session:
        await session.execute(
            text("UPDATE contexts SET metadata = :meta WHERE id = :id"),
            {"meta": json.dumps({"k": "\ud800", "\udc00": "key"}), "id": context_id},
        )
    got = await harness.client.get(f"/api/context/{context_id}", headers=AUTH)
    assert got.status_code == 200, got.text
    assert got.json()["data"]["metadata"] == {"k": "\ufffd", "\ufffd": "key"}
    found = await harness.client.get(
        "/api/context/search", params={"query": "poisoned", "mode": "keyword"}, headers=AUTH
    )
    assert found.status_code == 200, found.text
    assert [hit["context"]["id"] for hit in found.json()["data"]["items"]] == [context_id]
    deleted = await harness.client.delete(f"/api/context/{context_id}", headers=AUTH)
    assert deleted.status_code == 200, deleted.text


def test_the_walk_names_keys_and_indexes() -> None:
    document: Any = {"a": [{"ok": "fine"}, {"b": "\ud800"}]}
    assert lone_surrogate_path(document) == ("a", "1", "b")
    assert lone_surrogate_path({"\udfff": 1}) == ("\ufffd",)
    assert lone_surrogate_path("\ud800") == ()
    assert lone_surrogate_path({"emoji": "\U0001f600"}) is None
    assert replace_lone_surrogates({"\ud800": ["\udc00x"]}) == {"\ufffd": ["\ufffdx"]}


def test_the_hint_is_cheap_and_never_misses() -> None:
    assert may_hold_lone_surrogates(b'{"a": "\\ud800"}')
    assert may_hold_lone_surrogates(b'{"a": "\\uDFFF"}')
    assert may_hold_lone_surrogates(b'{"a": "x"}' + b"\xed\xa0\x80")
    assert not may_hold_lone_surrogates('{"a": "caf\u00e9 \u4e2d \\u00e9"}'.encode())


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"type": "note", "content": "x", "metadata": {"big": 1e400}}', "metadata.big"),
        (b'{"type": "note", "content": "x", "metadata": {"n": [1, NaN]}}', "metadata.n.1"),
        (b'{"type": "note", "content": "x", "metadata": {"n": -Infinity}}', "metadata.n"),
        (b'{"type": "note", "content": "x", "metadata": {"n": 1' + b"0" * 400 + b".5}}", "metadata.n"),
    ],
)
async def test_numbers_that_cannot_be_stored_are_refused(harness: Harness, raw: bytes, field: str) -> None:
    """The probe's finding: 1e400 in metadata was stored as null, silently."""
    response = await harness.client.post("/api/context", content=raw, headers=AUTH)
    assert response.status_code == 400, response.text
    [entry] = response.json()["error"]["details"]["fields"]
    assert (entry["field"], entry["type"], entry["location"]) == (field, "finite_number", "body")
    async with harness.runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(Context))).scalar_one() == 0


async def test_large_but_finite_numbers_pass(harness: Harness) -> None:
    raw = (
        b'{"type": "note", "content": "x", "metadata": {"avogadro": 6.02e23, "big": 1e300, "int": ' + b"9" * 400 + b"}}"
    )
    response = await harness.client.post("/api/context", content=raw, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["metadata"]["big"] == 1e300
