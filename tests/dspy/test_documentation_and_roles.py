"""Documentation retrieval with citations, and role refinement, over the caller's real context store;
the model's answers come from the scriptable fake upstream so what it cites is chosen by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.auth.support import assert_error, assert_ok
from tests.dspy.support import Env, answer, dspy_env
from tests.workflows.support import ADMIN, execute, save


@pytest.fixture
async def env(make_harness: Callable[..., Any]) -> AsyncIterator[Env]:
    async with dspy_env(make_harness) as e:
        yield e


async def test_answers_cite_only_retrieved_contexts_of_the_caller(env: Env) -> None:
    sqlite = await env.context("Trellis stores everything in SQLite by default; PostgreSQL when configured.")
    redis = await env.context("Redis is optional: it shares rate limits and breakers between replicas.")
    note = await env.context("Lunch is at noon.", type="note")
    part = await env.context(
        "The SQLite file lives in the data directory.",
        relationships=[{"target_context_id": sqlite["id"], "relationship_type": "part_of"}],
    )
    bobs = await env.context("Bob's secret: SQLite is slow.", headers=env.bob)

    env.up.chat(
        answer(processed_query="SQLite default database"),
        answer(
            answer=f"Trellis uses SQLite by default [{sqlite['id']}].",
            citations=[sqlite["id"], f"[{part['id']}]", bobs["id"], "ctx_invented123"],
        ),
    )
    response = await env.h.client.post(
        "/api/v1/dspy/workflows/documentation_retrieval/run",
        headers=env.alice,
        json={"inputs": {"query": "Which database does Trellis use by default?", "types": ["documentation"]}},
    )
    run = assert_ok(response)
    stages = run["stages"]
    assert stages["query_processing"]["data"]["processed_query"] == "SQLite default database"
    documents = stages["retrieval"]["data"]["documents"]
    retrieved = {d["id"] for d in documents}
    assert sqlite["id"] in retrieved
    assert note["id"] not in retrieved  # the type filter
    assert bobs["id"] not in retrieved  # only the caller's contexts are searched
    assert all(isinstance(d["score"], float) and d["score"] > 0 for d in documents)

    synthesis = run["data"]
    assert synthesis["answer"].startswith("Trellis uses SQLite by default")
    # Every cited id exists, is the caller's and was among the retrieved hits.
    assert synthesis["citations"]
    for cited in synthesis["citations"]:
        assert cited in retrieved
        got = await env.h.client.get(f"/api/context/{cited}", headers=env.alice)
        assert got.status_code == 200
    assert sqlite["id"] in synthesis["citations"]
    assert set(synthesis["rejected_citations"]) >= {bobs["id"], "ctx_invented123"}
    assert redis["id"] not in synthesis["citations"]
    # The synthesis prompt carried only retrieved contexts: never Bob's.
    prompt = env.up.calls("chat")[-1].body["messages"][-1]["content"]
    assert sqlite["id"] in prompt
    assert bobs["id"] not in prompt
    assert "Bob's secret" not in prompt


async def test_synthesis_refuses_to_answer_from_contexts_it_cannot_see(env: Env) -> None:
    bobs = await env.context("Bob's notes about deployment.", headers=env.bob)
    inputs = {"question": "How do we deploy?", "context_ids": [bobs["id"], "ctx_nope"]}
    data = assert_ok(await env.run("context_synthesis", inputs))["data"]
    assert data["citations"] == []
    assert data["answer"] == "No stored context answers this question."
    assert data["missing_context_ids"] == [bobs["id"], "ctx_nope"]
    assert env.up.calls("chat") == []  # no model was asked to answer from nothing


async def test_role_refinement_saves_a_new_version_of_the_role(env: Env) -> None:
    role = await env.context("You review Python code for bugs.", type="role_definition", metadata={"role": "reviewer"})
    refined = "You review Python code for bugs, and explain each finding with a short example of the fix."
    env.up.chat(answer(refined_definition=refined, rationale="clarity was weak"))
    inputs = {"context_id": role["id"], "performance_metrics": {"accuracy": 0.9, "clarity": 0.4}}
    data = assert_ok(await env.run("role_refinement", inputs))["data"]
    assert data == {
        "refined_definition": refined,
        "rationale": "clarity was weak",
        "refined_context_id": role["id"],
        "previous_version": 1,
        "version": 2,
    }
    stored = assert_ok(await env.h.client.get(f"/api/context/{role['id']}", headers=env.alice))
    assert (stored["content"], stored["version"]) == (refined, 2)
    prompt = env.up.calls("chat")[-1].body["messages"][-1]["content"]
    assert "You review Python code for bugs." in prompt
    assert '"clarity": 0.4' in prompt


async def test_role_refinement_refusals_change_nothing(env: Env) -> None:
    role = await env.context("You write tests first.", type="role_definition")
    note = await env.context("Not a role.", type="note")
    metrics = {"accuracy": 0.5}
    # Another user's context is not found, for an administrator too (it is written back); a context
    # of another type is a 400.
    for who in (env.bob, ADMIN):
        assert_error(
            await env.run("role_refinement", {"context_id": role["id"], "performance_metrics": metrics}, headers=who),
            404,
            "not_found_error",
        )
    error = assert_error(
        await env.run("role_refinement", {"context_id": note["id"], "performance_metrics": metrics}),
        400,
        "validation_error",
    )
    assert error["details"]["fields"][0]["field"] == "context_id"
    # A metric that is not a number names its field.
    error = assert_error(
        await env.run("role_refinement", {"context_id": role["id"], "performance_metrics": {"accuracy": "high"}}),
        400,
        "validation_error",
    )
    assert error["details"]["fields"][0]["field"] == "inputs.performance_metrics.accuracy"
    # A useless answer is a 502 and the role keeps its version.
    env.up.chat(answer(refined_definition="ok", rationale=""))
    assert_error(
        await env.run("role_refinement", {"context_id": role["id"], "performance_metrics": metrics}),
        502,
        "model_output_error",
    )
    stored = assert_ok(await env.h.client.get(f"/api/context/{role['id']}", headers=env.alice))
    assert (stored["content"], stored["version"]) == ("You write tests first.", 1)
    assert len(env.up.calls("chat")) == 1


async def test_a_module_as_a_workflow_step(env: Env) -> None:
    definition = {
        "steps": [
            {
                "id": "pick",
                "type": "dspy.run",
                "with": {"module": "model_switcher", "inputs": {"task": "{{ input.task }}", "complexity": "simple"}},
            },
        ],
        "output": {"answer": "{{ steps.pick.output.result }}", "model": "{{ steps.pick.output.model }}"},
    }
    await save(env.h, "pick", definition, headers=env.alice)
    env.up.chat(answer(result="Green."))
    run = await execute(env.h, "pick", {"task": "Name a color."}, wait=30, headers=env.alice)
    assert run["status"] == "succeeded", run.get("error")
    assert run["result"] == {"answer": "Green.", "model": "up"}
    await env.h.runtime.logs.flush()
    logs = assert_ok(await env.h.client.get("/api/v1/db/logs", params={"door": "dspy"}, headers=env.alice))
    (item,) = logs["items"]
    assert item["module"] == "model_switcher"
    assert item["request_id"].startswith(run["run_id"] if "run_id" in run else run["id"])

    # A bad input fails the step without a retry, naming the field.
    bad = {"steps": [{"id": "pick", "type": "dspy.run", "with": {"module": "model_switcher", "inputs": {}}}]}
    await save(env.h, "bad", bad, headers=env.alice)
    run = await execute(env.h, "bad", wait=30, headers=env.alice)
    assert run["status"] == "failed"
    assert "inputs.task" in run["error"]["message"]
