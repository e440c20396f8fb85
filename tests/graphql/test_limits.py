"""What one document may ask for ([graphql] settings): depth, cost, size, aliases; introspection and
GraphiQL on by default and off by setting. Each refusal is a validation_error naming its kind, and
nothing runs (no service is called)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Harness
from tests.graphql.support import data_of, error_of, field_entries, gql
from trellis.graphql.limits import CostEstimate
from trellis.graphql.router import build_schema
from trellis.settings import load_settings
from trellis.settings.graphql import GraphQLSettings

ADMIN = Harness.auth(ADMIN_KEY)


def nested(depth: int) -> str:
    """contexts → ... → relationships → other → relationships → other ... ``depth`` levels deep."""
    inner = "id"
    for _ in range(depth):
        inner = f"relationships {{ other {{ {inner} }} }}"
    return f"{{ contexts(first: 1) {{ edges {{ node {{ {inner} }} }} }} }}"


async def test_depth_over_the_limit(make_harness: Callable[..., Any]) -> None:
    async with make_harness(graphql={"max_depth": 6}) as h:
        assert data_of(await gql(h, nested(1), headers=ADMIN))  # depth 5: contexts/edges/node/relationships/other
        answer = await gql(h, nested(2), headers=ADMIN)
        error = error_of(answer, "validation_error")
        assert field_entries(error) == [("query", "query_too_deep")]
        assert "exceeds maximum operation depth of 6" in error["message"]
        assert answer["data"] is None
        # Fragments count where they are spread, and a fragment cycle is an error, not a hang.
        cyclic = (
            "query { ...A } fragment A on Query { contexts { edges { node { id } } } ...B } "
            "fragment B on Query { ...A }"
        )
        errors = (await gql(h, cyclic, headers=ADMIN))["errors"]
        assert errors
        assert {e["extensions"]["code"] for e in errors} == {"validation_error"}


async def test_cost_over_the_limit(make_harness: Callable[..., Any]) -> None:
    async with make_harness(graphql={"max_cost": 500, "default_list_cost": 10}) as h:
        cheap = "{ contexts(first: 10) { edges { node { id relationships { id } } } } }"
        assert data_of(await gql(h, cheap, headers=ADMIN))
        costly = "query Big($n: Int!) { contexts(first: $n) { edges { node { id relationships { other { id } } } } } }"
        answer = await gql(h, costly, {"n": 200}, headers=ADMIN)
        error = error_of(answer, "validation_error")
        assert field_entries(error) == [("query", "query_too_costly")]
        assert error["message"].startswith("'Big' costs ")
        details = error["extensions"]["details"]
        assert details["max_cost"] == 500
        assert details["cost"] > 500
        # The same document with a page the limit allows runs.
        assert data_of(await gql(h, costly, {"n": 5}, headers=ADMIN))


def test_cost_counts_pages_and_nested_lists() -> None:
    from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse

    schema = build_schema(GraphQLSettings())._schema

    def cost(source: str, variables: dict[str, Any] | None = None, default: int = 10) -> int:
        document = parse(source)
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        return CostEstimate(schema, fragments, variables or {}, default).operation(operation)

    assert cost("{ models { name } }") == 1 + 10 * 1
    assert cost("{ contexts(first: 5) { edges { node { id } } } }") == 1 + (1 + 5 * (1 + 1))
    assert cost("query($n: Int) { contexts(first: $n) { edges { cursor } } }", {"n": 3}) == 1 + (1 + 3 * 1)
    nested_lists = "{ contexts(first: 5) { edges { node { relationships { id } } } } }"
    assert cost(nested_lists) == 1 + (1 + 5 * (1 + (1 + 10 * 1)))
    with_fragment = "{ ...F } fragment F on Query { models { name provider } }"
    assert cost(with_fragment) == 1 + 10 * 2
    assert cost("{ __schema { types { name fields { name } } } }") == 0  # introspection is free


async def test_size_and_aliases_over_the_limit(make_harness: Callable[..., Any]) -> None:
    async with make_harness(graphql={"max_tokens": 100, "max_aliases": 3}) as h:
        long = "{ " + " ".join(f"a{i}: __typename" for i in range(60)) + " }"
        error = error_of(await gql(h, long, headers=ADMIN), "validation_error")
        assert field_entries(error) == [("query", "query_too_large")]
        aliases = "{ a: models { name } b: models { name } c: models { name } d: models { name } }"
        error = error_of(await gql(h, aliases, headers=ADMIN), "validation_error")
        assert field_entries(error) == [("query", "too_many_aliases")]
        assert "4 aliases found. Allowed: 3" in error["message"]


async def test_introspection_and_graphiql_on_by_default(harness: Harness) -> None:
    answer = await gql(harness, "{ __schema { queryType { name } } }")  # the schema is public, like /openapi.json
    assert data_of(answer) == {"__schema": {"queryType": {"name": "Query"}}}
    page = await harness.client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "graphiql" in page.text.lower()
    assert "https://unpkg.com" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("source", ["keyword", "environment"])
async def test_introspection_and_graphiql_off_by_setting(
    make_harness: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    overrides: dict[str, Any] = {}
    if source == "keyword":
        overrides["graphql"] = {"introspection": False, "graphiql": False}
    else:
        monkeypatch.setenv("TRELLIS_GRAPHQL__INTROSPECTION", "false")
        monkeypatch.setenv("TRELLIS_GRAPHQL__GRAPHIQL", "false")
        assert load_settings().graphql.introspection is False
    async with make_harness(**overrides) as h:
        answer = await gql(h, "{ __schema { queryType { name } } }", headers=ADMIN)
        assert answer["data"] is None
        error = answer["errors"][0]
        assert error["extensions"]["code"] == "validation_error"
        assert error["extensions"]["fields"][0]["type"] == "introspection_disabled"
        page = await h.client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 404
        error_of(page.json(), "not_found_error")
        # Queries still work.
        assert data_of(await gql(h, "{ models { name } }", headers=ADMIN))


async def test_graphql_off_by_setting(make_harness: Callable[..., Any]) -> None:
    async with make_harness(graphql={"enabled": False}) as h:
        response = await h.client.post("/graphql", json={"query": "{ models { name } }"}, headers=ADMIN)
        assert response.status_code == 404
