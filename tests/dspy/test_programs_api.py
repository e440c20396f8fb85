"""DSPy datasets and programs through REST, on SQLite and PostgreSQL: uploads checked against the
signature, optimization as a workflow run with progress events, deploy only when better, rollback,
running the deployed version, a tampered version refused, a breaker that opens mid-run, bad input
and another user's ids."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.auth.support import assert_error, assert_ok, field_names
from tests.dspy.capitals import ATLAS, EXAMPLES, CapitalModule, oracle, requested_fields, shown_examples_model
from tests.dspy.support import Env, dspy_env
from tests.gateway.upstream import Computed, Ok, Status
from trellis.dspy import repository as repo

API = "/api/v1/dspy"


@pytest.fixture
async def env(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Env]:
    async with dspy_env(
        make_harness,
        database_url=database_url,
        dspy={"default_model": "up", "optimize_max_model_calls": 100, "optimize_max_examples": 50},
    ) as e:
        e.h.runtime.dspy.registry.register_module("capital", CapitalModule)
        e.up.default["chat"] = Computed(shown_examples_model)
        yield e


async def post(env: Env, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return await env.h.client.post(f"{API}{path}", json=body, headers=headers or env.alice)


async def dataset(env: Env, name: str = "capitals", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "module": "capital", "examples": EXAMPLES, **extra}
    data: dict[str, Any] = assert_ok(await post(env, "/datasets", body), 201)
    return data


async def program(env: Env, name: str = "capitals") -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(await post(env, "/programs", {"name": name, "module": "capital"}), 201)
    return data


async def optimized(env: Env, program_id: str, dataset_id: str, **extra: Any) -> dict[str, Any]:
    """Start a cycle and wait for its run; returns the run's status document."""
    started = assert_ok(await post(env, f"/programs/{program_id}/optimize", {"dataset_id": dataset_id, **extra}), 202)
    assert started["status"] == "queued"
    await env.h.runtime.workflows.wait_for(started["run_id"], 30)
    run: dict[str, Any] = assert_ok(
        await env.h.client.get(f"/api/v1/workflow/status/{started['run_id']}", headers=env.alice)
    )
    return run


# --- datasets ----------------------------------------------------------------------------------------


async def test_datasets_upload_as_a_list_or_json_lines_and_belong_to_their_owner(env: Env) -> None:
    listed = await dataset(env)
    assert (listed["size"], listed["module"], listed["examples"]) == (10, "capital", None)
    lines = "\n".join(['{"country": "Peru", "capital": "Lima"}', "", '{"country": "Cuba", "capital": "Havana"}'])
    other = assert_ok(await post(env, "/datasets", {"name": "two", "module": "capital", "jsonl": lines}), 201)
    assert other["size"] == 2
    shown = assert_ok(await env.h.client.get(f"{API}/datasets/{other['id']}", headers=env.alice))
    assert shown["examples"] == [{"country": "Peru", "capital": "Lima"}, {"country": "Cuba", "capital": "Havana"}]
    names = [d["name"] for d in assert_ok(await env.h.client.get(f"{API}/datasets", headers=env.alice))]
    assert names == ["capitals", "two"]

    assert assert_ok(await env.h.client.get(f"{API}/datasets", headers=env.bob)) == []
    assert_error(await env.h.client.get(f"{API}/datasets/{other['id']}", headers=env.bob), 404, "not_found_error")
    assert_error(await env.h.client.delete(f"{API}/datasets/{other['id']}", headers=env.bob), 404, "not_found_error")
    assert_error(
        await post(env, "/datasets", {"name": "two", "module": "capital", "examples": EXAMPLES}), 409, "conflict_error"
    )

    assert assert_ok(await env.h.client.delete(f"{API}/datasets/{other['id']}", headers=env.alice))["deleted"] is True
    assert_error(await env.h.client.get(f"{API}/datasets/{other['id']}", headers=env.alice), 404, "not_found_error")


BAD_EXAMPLES: list[tuple[dict[str, Any], set[str]]] = [
    (
        {"jsonl": '{"country": "Peru", "capital": "Lima"}\n\n{"country": 5, "capital": "Havana"}'},
        {"line 3.country"},
    ),
    ({"jsonl": '{"country": "Peru", "capital": "Lima"}\n{"country": "Cuba", "capital": '}, {"line 2"}),
    ({"jsonl": '{"capital": "Lima"}'}, {"line 1.country"}),
    ({"jsonl": '{"country": "Peru"}'}, {"line 1"}),  # no label
    ({"jsonl": '["Peru", "Lima"]'}, {"line 1"}),
    ({"examples": [{"country": "Peru", "capital": "Lima", "colour": "red"}]}, {"examples.0.colour"}),
    ({"examples": [{"country": "Peru", "capital": ["Lima"]}]}, {"examples.0.capital"}),
    ({"examples": []}, {"examples"}),
    ({}, {"examples"}),
    ({"examples": EXAMPLES, "jsonl": "{}"}, {"examples"}),
]


async def test_an_example_that_does_not_fit_the_signature_is_a_400_naming_it(env: Env) -> None:
    for body, fields in BAD_EXAMPLES:
        response = await post(env, "/datasets", {"name": "bad", "module": "capital", **body})
        assert field_names(assert_error(response, 400, "validation_error")) == fields, body
    assert assert_ok(await env.h.client.get(f"{API}/datasets", headers=env.alice)) == []


async def test_malformed_dataset_and_program_requests(env: Env) -> None:
    for path in ("/datasets", "/programs"):
        response = await env.h.client.post(
            f"{API}{path}", content=b'{"name": ', headers={**env.alice, "Content-Type": "application/json"}
        )
        assert_error(response, 400, "validation_error")
        error = assert_error(await post(env, path, {"name": 5, "module": "capital"}), 400, "validation_error")
        assert "name" in field_names(error)
        error = assert_error(await post(env, path, {"module": "capital"}), 400, "validation_error")
        assert field_names(error) == {"name"}
        error = assert_error(await post(env, path, {"name": "a b", "module": "capital"}), 400, "validation_error")
        assert field_names(error) == {"name"}
    assert_error(
        await post(env, "/datasets", {"name": "x", "module": "nope", "examples": EXAMPLES}), 404, "not_found_error"
    )
    assert_error(await post(env, "/programs", {"name": "x", "module": "nope"}), 404, "not_found_error")
    await program(env)
    assert_error(await post(env, "/programs", {"name": "capitals", "module": "capital"}), 409, "conflict_error")
    for path in ("/programs/prg_nope", "/datasets/ds_nope"):
        assert_error(await env.h.client.get(f"{API}{path}", headers=env.alice), 404, "not_found_error")


# --- the optimization cycle --------------------------------------------------------------------------


async def test_optimize_runs_as_a_workflow_with_progress_then_deploy_rollback_and_run(env: Env) -> None:
    data, prog = await dataset(env), await program(env)
    run = await optimized(env, prog["id"], data["id"], seed=1)
    assert run["status"] == "succeeded", run
    assert run["workflow"] == "dspy.optimize"
    assert run["result"]["version"] == 1
    assert run["result"]["deployed"] is True
    events = assert_ok(await env.h.client.get(f"/api/v1/workflow/{run['id']}/events", headers=env.alice))
    kinds = [e["type"] for e in events["items"]]
    assert [k for k in kinds if k.startswith("dspy.")] == [
        "dspy.split",
        "dspy.evaluated",
        "dspy.compiling",
        "dspy.compiled",
        "dspy.evaluated",
        "dspy.stored",
    ]
    scored = [e["data"] for e in events["items"] if e["type"] == "dspy.evaluated"]
    assert [(s["program"], s["test"]) for s in scored] == [("baseline", 0.0), ("optimized", 1.0)]

    shown = assert_ok(await env.h.client.get(f"{API}/programs/{prog['id']}", headers=env.alice))
    assert (shown["deployed_version"], shown["latest_version"]) == (1, 1)
    (v1,) = shown["versions"]
    assert v1["intact"] is True
    assert v1["scores"] == {"baseline": {"dev": 0.0, "test": 0.0}, "optimized": {"dev": 1.0, "test": 1.0}}
    assert (v1["split"], v1["seed"], v1["dataset_id"]) == ({"train": 6, "dev": 2, "test": 2}, 1, data["id"])
    assert v1["optimizer"] == "bootstrap_few_shot"
    assert v1["optimizer_params"]["max_labeled_demos"] == 8
    assert v1["model"] == "up"
    assert v1["run_id"] == run["id"]
    assert v1["demos"] > 0

    answer = assert_ok(await post(env, f"/programs/{prog['id']}/run", {"inputs": {"country": "Peru"}}))
    assert answer["data"] == {"capital": "Lima"}
    assert_error(await post(env, f"/programs/{prog['id']}/run", {"inputs": {"country": 5}}), 400, "validation_error")

    # A second cycle, not deployed; a dataset in use is kept.
    run = await optimized(env, prog["id"], data["id"], seed=2, deploy=False)
    assert (run["result"]["version"], run["result"]["deployed"]) == (2, False)
    assert_error(await env.h.client.delete(f"{API}/datasets/{data['id']}", headers=env.alice), 409, "conflict_error")
    # Deploy: equal on test is not better; force overrides.
    error = assert_error(await post(env, f"/programs/{prog['id']}/deploy", {"version": 2}), 409, "conflict_error")
    assert error["details"]["deployed_version"] == 1
    assert (
        assert_ok(await post(env, f"/programs/{prog['id']}/deploy", {"version": 2, "force": True}))["deployed_version"]
        == 2
    )
    assert_error(await post(env, f"/programs/{prog['id']}/deploy", {"version": 9}), 404, "not_found_error")
    # Rollback: to an earlier version only.
    error = assert_error(await post(env, f"/programs/{prog['id']}/rollback", {"version": 2}), 400, "validation_error")
    assert field_names(error) == {"version"}
    assert assert_ok(await post(env, f"/programs/{prog['id']}/rollback", {"version": 1}))["deployed_version"] == 1
    assert_error(await post(env, f"/programs/{prog['id']}/rollback", {"version": "1"}), 400, "validation_error")

    # Another user's program is not found, whatever the door.
    for path, body in (
        ("/optimize", {"dataset_id": data["id"]}),
        ("/deploy", {"version": 1}),
        ("/rollback", {"version": 1}),
        ("/run", {"inputs": {"country": "Peru"}}),
    ):
        assert_error(await post(env, f"/programs/{prog['id']}{path}", body, headers=env.bob), 404, "not_found_error")
    assert_error(await env.h.client.get(f"{API}/programs/{prog['id']}", headers=env.bob), 404, "not_found_error")
    assert assert_ok(await env.h.client.get(f"{API}/programs", headers=env.bob)) == []

    # Delete: not another user's; the owner's goes with its versions, and its dataset is free again.
    assert_error(await env.h.client.delete(f"{API}/programs/{prog['id']}", headers=env.bob), 404, "not_found_error")
    assert assert_ok(await env.h.client.delete(f"{API}/programs/{prog['id']}", headers=env.alice)) == {
        "id": prog["id"],
        "deleted": True,
    }
    assert_error(await env.h.client.get(f"{API}/programs/{prog['id']}", headers=env.alice), 404, "not_found_error")
    assert_error(await env.h.client.delete(f"{API}/programs/{prog['id']}", headers=env.alice), 404, "not_found_error")
    async with env.h.runtime.database.reader() as session:
        assert await repo.versions(session, prog["id"]) == []
    assert assert_ok(await env.h.client.delete(f"{API}/datasets/{data['id']}", headers=env.alice))["deleted"] is True


@pytest.mark.parametrize(
    ("request_body", "stored"),
    [
        (
            {"optimizer": "miprov2_light", "max_bootstrapped_demos": 2, "max_labeled_demos": 2},
            {"auto": "light", "num_trials": 10, "max_bootstrapped_demos": 2, "max_labeled_demos": 2},
        ),
        (
            {"optimizer": "gepa", "max_metric_calls": 24, "reflection_minibatch_size": 2},
            {"max_metric_calls": 24, "reflection_minibatch_size": 2, "reflection_model": "up"},
        ),
    ],
    ids=["miprov2_light", "gepa"],
)
async def test_miprov2_light_and_gepa_run_as_workflows_and_store_their_optimizer(
    env: Env, request_body: dict[str, Any], stored: dict[str, Any]
) -> None:
    env.up.default["chat"] = Computed(oracle)
    data, prog = await dataset(env), await program(env)
    body = {"dataset_id": data["id"], "seed": 1, **request_body}
    started = assert_ok(await post(env, f"/programs/{prog['id']}/optimize", body), 202)
    estimate = started["estimated_model_calls"]
    assert 0 < estimate <= 100
    await env.h.runtime.workflows.wait_for(started["run_id"], 60)
    run = assert_ok(await env.h.client.get(f"/api/v1/workflow/status/{started['run_id']}", headers=env.alice))
    assert run["status"] == "succeeded", run
    assert run["result"]["scores"] == {"baseline": {"dev": 0.0, "test": 0.0}, "optimized": {"dev": 1.0, "test": 1.0}}
    assert 0 < run["result"]["model_calls"] <= estimate

    shown = assert_ok(await env.h.client.get(f"{API}/programs/{prog['id']}", headers=env.alice))
    (v1,) = shown["versions"]
    assert (v1["optimizer"], v1["deployed"], v1["intact"], v1["run_id"]) == (
        request_body["optimizer"],
        True,
        True,
        run["id"],
    )
    assert {k: v1["optimizer_params"][k] for k in stored} == stored
    assert v1["optimizer_params"]["max_model_calls"] == 100
    await env.h.runtime.logs.flush()
    logs = assert_ok(
        await env.h.client.get("/api/v1/db/logs", params={"door": "dspy", "limit": 200}, headers=env.alice)
    )
    assert len(logs["items"]) == run["result"]["model_calls"]
    assert {item["module"] for item in logs["items"]} == {"capital"}
    answer = assert_ok(await post(env, f"/programs/{prog['id']}/run", {"inputs": {"country": "Peru"}}))
    assert answer["data"] == {"capital": "Lima"}
    if request_body["optimizer"] == "gepa":
        assert v1["demos"] == 0  # the instruction alone, which the deployed version carries
        async with env.h.runtime.database.reader() as session:
            (document,) = (
                await session.execute(
                    text("SELECT document FROM dspy_program_versions WHERE program_id = :p"), {"p": prog["id"]}
                )
            ).scalars()
        assert ATLAS in document


def garbled_own_calls(body: dict[str, Any]) -> Ok:
    """The capital module's calls answered by the oracle; the optimizer's own calls with prose."""
    return oracle(body) if requested_fields(body) == ["capital"] else Ok("Let me think about that...")


async def test_a_proposal_that_does_not_parse_fails_a_miprov2_run_cleanly_and_stores_nothing(env: Env) -> None:
    env.up.default["chat"] = Computed(garbled_own_calls)
    data, prog = await dataset(env), await program(env)
    run = await optimized(env, prog["id"], data["id"], seed=1, optimizer="miprov2_light")
    assert run["status"] == "failed", run
    (step,) = run["steps"]
    assert step["attempt"] == 1
    assert step["error"]["code"] == "model_output_error"
    assert "module 'capital'" in step["error"]["message"]
    assert "Traceback" not in json.dumps(run)
    shown = assert_ok(await env.h.client.get(f"{API}/programs/{prog['id']}", headers=env.alice))
    assert (shown["deployed_version"], shown["versions"]) == (None, [])


async def test_gepa_skips_a_reflection_that_does_not_parse_and_keeps_what_it_had(env: Env) -> None:
    """GEPA treats a proposal that fails as no proposal (as its evaluators treat a failed example):
    the run ends with the unchanged program, stored, not deployed; the failed reflections are in
    the episodic log as errors."""
    env.up.default["chat"] = Computed(garbled_own_calls)
    data, prog = await dataset(env), await program(env)
    run = await optimized(env, prog["id"], data["id"], seed=1, optimizer="gepa", max_metric_calls=20)
    assert run["status"] == "succeeded", run
    assert run["result"]["scores"]["optimized"] == {"dev": 0.0, "test": 0.0}
    assert (run["result"]["version"], run["result"]["deployed"]) == (1, False)
    await env.h.runtime.logs.flush()
    logs = assert_ok(
        await env.h.client.get("/api/v1/db/logs", params={"door": "dspy", "limit": 200}, headers=env.alice)
    )
    failed = [item for item in logs["items"] if item["status"] != "ok"]
    assert failed
    assert len(logs["items"]) == run["result"]["model_calls"]


async def test_an_optimizer_that_tunes_prompts_refuses_a_module_without_predictors(env: Env) -> None:
    rows = [{"query": f"question {i}", "documents": [{"id": f"ctx_{i}"}]} for i in range(6)]
    data = assert_ok(
        await post(env, "/datasets", {"name": "docs", "module": "documentation_retrieval", "examples": rows}), 201
    )
    prog = assert_ok(await post(env, "/programs", {"name": "docs", "module": "documentation_retrieval"}), 201)
    for extra in ({"optimizer": "miprov2_light"}, {"optimizer": "gepa", "max_metric_calls": 10}):
        response = await post(env, f"/programs/{prog['id']}/optimize", {"dataset_id": data["id"], **extra})
        error = assert_error(response, 400, "validation_error")
        assert field_names(error) == {"optimizer"}
        assert "no predictors" in error["details"]["fields"][0]["message"]


async def test_a_program_without_a_deployed_version_does_not_run(env: Env) -> None:
    prog = await program(env)
    error = assert_error(
        await post(env, f"/programs/{prog['id']}/run", {"inputs": {"country": "Peru"}}), 409, "conflict_error"
    )
    assert "no deployed version" in error["message"]
    assert env.up.calls("chat") == []


BAD_OPTIMIZATIONS: list[tuple[dict[str, Any], str]] = [
    ({"max_model_calls": 101}, "max_model_calls"),  # the settings' limit is 100
    ({"max_model_calls": 5}, "max_model_calls"),  # fewer than this dataset needs
    ({"max_examples": 51}, "max_examples"),
    ({"max_examples": 5}, "dataset_id"),  # the dataset is larger
    ({"max_labeled_demos": 9}, "max_labeled_demos"),  # [dspy] max_demos is 8
    ({"metric_fields": ["country"]}, "metric_fields"),
    ({"optimizer": "simba"}, "optimizer"),
    ({"optimizer": None}, "optimizer"),
    ({"max_rounds": "1"}, "max_rounds"),
    ({"dataset_id": None}, "dataset_id"),
    # MIPROv2 light and GEPA: their budgets, and parameters that are not theirs.
    ({"optimizer": "miprov2_light", "max_model_calls": 60}, "max_model_calls"),  # it needs up to 65 here
    ({"optimizer": "gepa"}, "max_model_calls"),  # GEPA's light budget is far over 100 calls
    ({"optimizer": "gepa", "max_metric_calls": 80}, "max_model_calls"),
    ({"optimizer": "gepa", "max_metric_calls": 0}, "max_metric_calls"),
    ({"optimizer": "gepa", "max_metric_calls": 20, "reflection_minibatch_size": 0}, "reflection_minibatch_size"),
    ({"optimizer": "gepa", "max_metric_calls": 20, "max_rounds": 2}, "max_rounds"),
    ({"optimizer": "gepa", "max_metric_calls": 20, "max_labeled_demos": 2}, "max_labeled_demos"),
    ({"optimizer": "gepa", "max_metric_calls": 20, "reflection_model": ""}, "reflection_model"),
    ({"optimizer": "miprov2_light", "max_rounds": 2}, "max_rounds"),
    ({"optimizer": "miprov2_light", "max_metric_calls": 20}, "max_metric_calls"),
    ({"optimizer": "miprov2_light", "max_bootstrapped_demos": 0}, "max_bootstrapped_demos"),  # 8 labelled
    ({"optimizer": "bootstrap_few_shot", "reflection_model": "up"}, "reflection_model"),
    ({"optimizer": "labeled_few_shot", "max_bootstrapped_demos": 2}, "max_bootstrapped_demos"),
]


async def test_an_optimization_over_its_budget_or_malformed_is_a_400_naming_the_field(env: Env) -> None:
    data, prog = await dataset(env), await program(env)
    for extra, field in BAD_OPTIMIZATIONS:
        body = {"dataset_id": data["id"], **extra}
        error = assert_error(await post(env, f"/programs/{prog['id']}/optimize", body), 400, "validation_error")
        assert field_names(error) == {field}, extra
    assert env.up.calls("chat") == []


async def test_a_dataset_of_another_user_or_module_is_refused(env: Env) -> None:
    prog = await program(env)
    bobs = assert_ok(
        await post(env, "/datasets", {"name": "b", "module": "capital", "examples": EXAMPLES}, env.bob), 201
    )
    assert_error(
        await post(env, f"/programs/{prog['id']}/optimize", {"dataset_id": bobs["id"]}), 404, "not_found_error"
    )
    rows = [{"query": f"question {i}", "processed_query": f"q{i}"} for i in range(6)]
    other = assert_ok(
        await post(env, "/datasets", {"name": "docs", "module": "documentation_query", "examples": rows}), 201
    )
    error = assert_error(
        await post(env, f"/programs/{prog['id']}/optimize", {"dataset_id": other["id"]}), 400, "validation_error"
    )
    assert field_names(error) == {"dataset_id"}
    small = assert_ok(
        await post(env, "/datasets", {"name": "small", "module": "capital", "examples": EXAMPLES[:4]}), 201
    )
    error = assert_error(
        await post(env, f"/programs/{prog['id']}/optimize", {"dataset_id": small["id"]}), 400, "validation_error"
    )
    assert field_names(error) == {"dataset_id"}


async def test_a_version_edited_in_the_database_is_refused(env: Env) -> None:
    data, prog = await dataset(env), await program(env)
    assert (await optimized(env, prog["id"], data["id"], seed=1))["status"] == "succeeded"
    assert (await optimized(env, prog["id"], data["id"], seed=1, deploy=False))["status"] == "succeeded"
    async with env.h.runtime.database.transaction() as session:
        changed = await session.execute(
            text(
                "UPDATE dspy_program_versions SET document = replace(document, 'Lima', 'Atlantis') "
                "WHERE program_id = :p AND version = 1"
            ),
            {"p": prog["id"]},
        )
        assert changed.rowcount == 1  # type: ignore[attr-defined]
    shown = assert_ok(await env.h.client.get(f"{API}/programs/{prog['id']}", headers=env.alice))
    assert [(v["version"], v["intact"]) for v in shown["versions"]] == [(1, False), (2, True)]
    assert shown["versions"][0]["scores"] is None
    error = assert_error(
        await post(env, f"/programs/{prog['id']}/run", {"inputs": {"country": "Peru"}}), 409, "program_integrity_error"
    )
    assert error["details"]["version"] == 1
    calls = len(env.up.calls("chat"))
    # The intact version can replace it (forced: the deployed one cannot be compared), not the other way.
    assert_error(await post(env, f"/programs/{prog['id']}/deploy", {"version": 2}), 409, "program_integrity_error")
    assert (
        assert_ok(await post(env, f"/programs/{prog['id']}/deploy", {"version": 2, "force": True}))["deployed_version"]
        == 2
    )
    assert_error(await post(env, f"/programs/{prog['id']}/rollback", {"version": 1}), 409, "program_integrity_error")
    assert len(env.up.calls("chat")) == calls


async def test_a_breaker_that_opens_mid_optimization_fails_the_run_and_deploys_nothing(
    make_harness: Callable[..., Any], database_url: str
) -> None:
    tuning = {"breaker_failure_threshold": 1, "max_attempts": 1, "breaker_recovery_seconds": 300}
    async with dspy_env(make_harness, database_url=database_url, gateway=tuning) as env:
        env.h.runtime.dspy.registry.register_module("capital", CapitalModule)
        served: list[int] = []

        def failing_after_four(body: dict[str, Any]) -> Ok | Status:
            served.append(1)
            return shown_examples_model(body) if len(served) <= 4 else Status(500)

        env.up.default["chat"] = Computed(failing_after_four)
        data, prog = await dataset(env), await program(env)
        run = await optimized(env, prog["id"], data["id"], seed=1)
        assert run["status"] == "failed"
        (step,) = run["steps"]
        assert step["status"] == "failed"
        assert step["attempt"] == 1  # not retried
        assert step["error"]["code"] == "unavailable_error"
        # Four answers (the baseline), one failure opened the breaker, and the run stopped there:
        # no call after it, nothing scored as zeros and kept.
        assert len(env.up.calls("chat")) == 5
        # The breaker is open: a module run now is refused without reaching the upstream.
        assert_error(await env.run("capital", {"country": "Peru"}), 503, "unavailable_error")
        assert len(env.up.calls("chat")) == 5
        shown = assert_ok(await env.h.client.get(f"{API}/programs/{prog['id']}", headers=env.alice))
        assert (shown["deployed_version"], shown["latest_version"], shown["versions"]) == (None, 0, [])
        events = assert_ok(await env.h.client.get(f"/api/v1/workflow/{run['id']}/events", headers=env.alice))
        assert "dspy.stored" not in [e["type"] for e in events["items"]]


async def test_a_json_lines_body_is_a_dataset_and_its_bad_line_is_named(env: Env) -> None:
    def upload(body: bytes, params: dict[str, str], content_type: str = "application/x-ndjson") -> Any:
        headers = {**env.alice, "Content-Type": content_type}
        return env.h.client.post(f"{API}/datasets/jsonl", content=body, params=params, headers=headers)

    good = b'{"country": "Peru", "capital": "Lima"}\r\n{"country": "Cuba", "capital": "Havana"}\n'
    data = assert_ok(await upload(good, {"name": "lines", "module": "capital"}), 201)
    assert (data["name"], data["size"]) == ("lines", 2)
    bad = b'{"country": "Peru", "capital": "Lima"}\n{"country": "Cuba", "capital": 7}\n'
    error = assert_error(await upload(bad, {"name": "bad", "module": "capital"}), 400, "validation_error")
    assert field_names(error) == {"line 2.capital"}
    error = assert_error(await upload(good, {"module": "capital"}), 400, "validation_error")
    assert field_names(error) == {"name"}
    assert error["details"]["fields"][0]["location"] == "query"
    assert_error(
        await upload(good, {"name": "x", "module": "capital"}, "application/pdf"), 415, "unsupported_media_type_error"
    )
    assert_error(await upload(b"\xff\xfe", {"name": "x", "module": "capital"}), 400, "validation_error")
    assert_ok(await upload(good, {"name": "plain", "module": "capital"}, "text/plain"), 201)
    assert [d["name"] for d in assert_ok(await env.h.client.get(f"{API}/datasets", headers=env.alice))] == [
        "lines",
        "plain",
    ]


async def test_optimizing_needs_the_ai_and_write_scopes_and_a_known_model(env: Env) -> None:
    data, prog = await dataset(env), await program(env)
    body = {"dataset_id": data["id"]}
    _, key = await env.h.create_key(env.alice_id, scopes=["read", "write"])
    error = assert_error(
        await post(env, f"/programs/{prog['id']}/optimize", body, env.h.auth(key)), 403, "authorization_error"
    )
    assert error["details"]["scope"] == "ai"
    _, key = await env.h.create_key(env.alice_id, scopes=["read", "ai"])
    assert_error(await post(env, f"/programs/{prog['id']}/optimize", body, env.h.auth(key)), 403, "authorization_error")
    error = assert_error(
        await post(env, f"/programs/{prog['id']}/optimize", {**body, "model": "nope"}), 404, "not_found_error"
    )
    assert error["details"]["model"] == "nope"
    gepa = {**body, "optimizer": "gepa", "max_metric_calls": 20, "reflection_model": "nope"}
    error = assert_error(await post(env, f"/programs/{prog['id']}/optimize", gepa), 404, "not_found_error")
    assert error["details"]["model"] == "nope"
    assert env.up.calls("chat") == []
    runs = assert_ok(await env.h.client.get("/api/v1/workflow/history", headers=env.alice))
    assert runs["items"] == []


async def test_the_optimize_step_type_is_listed_and_refuses_a_bad_request_without_retrying(env: Env) -> None:
    types = assert_ok(await env.h.client.get("/api/v1/workflow/step-types", headers=env.alice))
    assert "dspy.optimize" in {t["name"] for t in types}
    prog = await program(env)
    step = {"id": "opt", "type": "dspy.optimize", "with": {"program_id": prog["id"], "request": {"max_rounds": 1}}}
    saved = await env.h.client.put("/api/v1/workflows/mine", json={"definition": {"steps": [step]}}, headers=env.alice)
    assert saved.status_code == 201, saved.text
    response = await env.h.client.post(
        "/api/v1/workflow/execute", json={"workflow": "mine", "input": {}, "wait": 30}, headers=env.alice
    )
    run = response.json()["data"]
    assert run["status"] == "failed", run
    detail = assert_ok(await env.h.client.get(f"/api/v1/workflow/status/{run['id']}", headers=env.alice))
    (state,) = detail["steps"]
    assert state["attempt"] == 1
    assert "invalid optimization request" in state["error"]["message"]
    assert env.up.calls("chat") == []
