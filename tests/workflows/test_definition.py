"""Definitions are checked on save: each rule gives a 400 naming the step and the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness
from tests.workflows.support import ADMIN
from trellis.kit.errors import ValidationFailed
from trellis.settings import WorkflowSettings
from trellis.workflows.definition import parse_definition
from trellis.workflows.steps.registry import StepRegistry

REGISTRY = StepRegistry()


def fields_of(raw: dict[str, Any], **settings: Any) -> list[tuple[str, str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition(raw, REGISTRY, settings=WorkflowSettings(**settings))
    return [(f["field"], f["type"], f["message"]) for f in caught.value.details["fields"]]


def step(step_id: str, type_: str = "transform", with_: dict[str, Any] | None = None, **rest: Any) -> dict[str, Any]:
    return {"id": step_id, "type": type_, "with": {"value": 1} if with_ is None else with_, **rest}


def test_a_valid_definition_with_every_feature_passes() -> None:
    definition = parse_definition(
        {
            "input_schema": {"type": "object", "properties": {"items": {"type": "array"}}},
            "steps": [
                step("a", with_={"value": "{{ input.items }}"}) | {"with": {"value": "{{ input.items }}"}},
                step("b", needs=["a"], **{"if": "{{ steps.a.output | length > 0 }}"}),
                step("c", needs=[], retry={"attempts": 3, "backoff_seconds": 0.5}, timeout_seconds=5),
                {
                    "id": "each",
                    "type": "map",
                    "over": "{{ steps.a.output }}",
                    "concurrency": 2,
                    "needs": ["a"],
                    "step": {"type": "transform", "with": {"value": "{{ item }}-{{ index }}"}},
                },
                step("risky", "http.request", with_={}, needs=["c"], on_error="fallback", fallback="safe")
                | {"with": {"url": "https://example.com/{{ steps.c.output }}"}},
                step("safe", with_={}) | {"with": {"value": "{{ error.message }}"}},
                step("last", needs=["b", "each", "risky"], on_error="continue"),
            ],
            "output": {"a": "{{ steps.a.output }}", "last": "{{ steps.last.output }}"},
        },
        REGISTRY,
    )
    assert definition.needs_of()["last"] == ["b", "each", "risky"]
    assert definition.needs_of()["b"] == ["a"]
    assert "safe" not in definition.needs_of()  # runs only as risky's fallback


@pytest.mark.parametrize(
    ("raw", "field", "kind", "words"),
    [
        ({"steps": [step("a", "nope")]}, "definition.steps.0.type", "unknown_step_type", "unknown step type 'nope'"),
        (
            {"steps": [step("a", with_={}) | {"with": {"value": 1, "extra": 2}}]},
            "definition.steps.0.with.extra",
            "extra_forbidden",
            "step 'a'",
        ),
        (
            {"steps": [step("a", "http.request", with_={}) | {"with": {}}]},
            "definition.steps.0.with.url",
            "missing",
            "step 'a'",
        ),
        (
            {"steps": [step("a"), step("b", needs=["zzz"])]},
            "definition.steps.1.needs.0",
            "unknown_reference",
            "no step named 'zzz'",
        ),
        ({"steps": [step("a", needs=["b"]), step("b", needs=["a"])]}, "definition.steps.0.needs", "cycle", "cycle"),
        (
            {"steps": [step("a", with_={}) | {"with": {"value": "{{ input.x "}}]},
            "definition.steps.0.with.value",
            "template_syntax",
            "template syntax error",
        ),
        (
            {"steps": [step("a", with_={}) | {"with": {"value": "{{ steps.b.output }}"}}, step("b")]},
            "definition.steps.0.with.value",
            "unknown_reference",
            "steps.b is not a step that runs before",
        ),
        (
            {"steps": [step("a", with_={}) | {"with": {"value": "{{ secrets.x }}"}}]},
            "definition.steps.0.with.value",
            "unknown_reference",
            "unknown name 'secrets'",
        ),
        ({"steps": [step("a"), step("a")]}, "definition.steps.1.id", "duplicate", "used twice"),
        ({"steps": [step("a", on_error="fallback")]}, "definition.steps.0.fallback", "missing", "needs a fallback"),
        (
            {"steps": [step("a", on_error="fallback", fallback="ghost")]},
            "definition.steps.0.fallback",
            "unknown_reference",
            "no step named 'ghost'",
        ),
        (
            {"steps": [{"id": "m", "type": "map", "step": {"type": "transform", "with": {"value": 1}}}]},
            "definition.steps.0.over",
            "missing",
            "needs 'over'",
        ),
        (
            {"steps": [step("a", **{"if": "{{ steps.a.output }}"})]},
            "definition.steps.0.if",
            "unknown_reference",
            "steps.a is not a step that runs before",
        ),
        (
            {"input_schema": {"type": "nonsense"}, "steps": [step("a")]},
            "definition.input_schema",
            "schema_invalid",
            "not a valid JSON Schema",
        ),
        ({"steps": [step("bad id")]}, "definition.steps.0.id", "string_pattern_mismatch", ""),
        ({"steps": []}, "definition.steps", "too_short", ""),
        (
            {"steps": [step("a")], "output": "{{ steps.nope.output }}"},
            "definition.output",
            "unknown_reference",
            "steps.nope",
        ),
    ],
)
def test_each_rule_names_the_step_and_field(raw: dict[str, Any], field: str, kind: str, words: str) -> None:
    found = fields_of(raw)
    assert any(f == field and k == kind and words in m for f, k, m in found), found


def test_a_wait_over_the_maximum_is_refused_on_save() -> None:
    found = fields_of({"steps": [step("w", "wait", with_={}) | {"with": {"seconds": 100}}]}, max_wait_seconds=60)
    assert found[0][0] == "definition.steps.0.with"
    assert "over the maximum wait of 60 seconds" in found[0][2]


def test_jinja_builtins_and_loops_are_known_names() -> None:
    value = "{% for x in range(3) %}{{ loop.index }}{% endfor %}{% set ns = namespace(n=1) %}{{ ns.n }}"
    parse_definition({"steps": [step("a", with_={"value": value})]}, REGISTRY)


def test_templated_values_are_left_to_run_time() -> None:
    # seconds is a template here: its type cannot be known before the run renders it.
    parse_definition({"steps": [step("w", "wait", with_={}) | {"with": {"seconds": "{{ input.s }}"}}]}, REGISTRY)


async def test_the_rest_door_answers_a_400_naming_the_step(harness: Harness) -> None:
    bad = {"steps": [step("first"), step("second", "http.request", with_={}) | {"with": {"url": 5}}]}
    response = await harness.client.post("/api/v1/workflows", json={"name": "x", "definition": bad}, headers=ADMIN)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"]["fields"][0]["field"] == "definition.steps.1.with.url"
    assert "step 'second'" in error["details"]["fields"][0]["message"]
    # Nothing was saved.
    assert (await harness.client.get("/api/v1/workflows/x", headers=ADMIN)).status_code == 404


async def test_versions_are_kept_and_equal_definitions_make_none(harness: Harness) -> None:
    c = harness.client
    v1 = {"steps": [step("a", with_={}) | {"with": {"value": "one"}}]}
    v2 = {"steps": [step("a", with_={}) | {"with": {"value": "two"}}]}
    first = await c.post("/api/v1/workflows", json={"name": "w", "definition": v1}, headers=ADMIN)
    assert first.status_code == 201
    again = await c.post("/api/v1/workflows", json={"name": "w", "definition": v1}, headers=ADMIN)
    assert again.status_code == 409
    same = await c.put("/api/v1/workflows/w", json={"definition": v1}, headers=ADMIN)
    assert same.json()["data"]["changed"] is False
    assert same.json()["data"]["version"] == 1
    second = await c.put("/api/v1/workflows/w", json={"definition": v2}, headers=ADMIN)
    assert second.json()["data"]["version"] == 2
    old = await c.get("/api/v1/workflows/w", params={"version": 1}, headers=ADMIN)
    assert old.json()["data"]["definition"]["steps"][0]["with"]["value"] == "one"
    missing = await c.get("/api/v1/workflows/w", params={"version": 9}, headers=ADMIN)
    assert missing.status_code == 404
    versions = await c.get("/api/v1/workflows/w/versions", headers=ADMIN)
    assert [v["version"] for v in versions.json()["data"]] == [1, 2]
    assert (await c.delete("/api/v1/workflows/w", headers=ADMIN)).status_code == 200
    assert (await c.get("/api/v1/workflows/w", headers=ADMIN)).status_code == 404
    # The name can be used again, from version 1.
    again = await c.post("/api/v1/workflows", json={"name": "w", "definition": v2}, headers=ADMIN)
    assert again.json()["data"]["version"] == 1


async def test_another_users_workflow_is_not_found(harness: Harness) -> None:
    _, key = await harness.user_with_key("bob")
    await harness.client.put("/api/v1/workflows/mine", json={"definition": {"steps": [step("a")]}}, headers=ADMIN)
    other = {"Authorization": f"Bearer {key}"}
    assert (await harness.client.get("/api/v1/workflows/mine", headers=other)).status_code == 404
    run = await harness.client.post("/api/v1/workflow/execute", json={"workflow": "mine"}, headers=other)
    assert run.status_code == 404
