"""The DSPy module doors against a scriptable fake upstream: what is registered, runs, bad input,
failures (unparsable answers, an upstream that is down, an empty rate budget), the episodic log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from tests.auth.support import assert_error, assert_ok, field_names
from tests.dspy.support import Env, answer, dspy_env, upstream_model
from tests.gateway.upstream import FakeUpstream, Garbage, Ok, Status
from tests.graphql.support import data_of, gql
from trellis.episodic.models import EpisodicLog

SEED_MODULES = {
    "model_switcher",
    "role_refinement",
    "documentation_query",
    "documentation_retrieval",
    "context_synthesis",
}


@pytest.fixture
async def env(make_harness: Callable[..., Any]) -> AsyncIterator[Env]:
    async with dspy_env(make_harness) as e:
        yield e


async def test_modules_are_listed_with_their_signature_fields(env: Env) -> None:
    modules = {m["name"]: m for m in assert_ok(await env.h.client.get("/api/v1/dspy/modules", headers=env.alice))}
    assert set(modules) >= SEED_MODULES
    switcher = modules["model_switcher"]
    assert switcher["module_type"] == "ModelSwitcher"
    inputs = {f["name"]: f for f in switcher["inputs"]}
    assert inputs["task"]["required"] is True
    assert inputs["task"]["type"] == "str"
    assert inputs["complexity"]["required"] is False
    assert inputs["complexity"]["default"] == "moderate"
    assert {f["name"] for f in switcher["outputs"]} == {"result", "model", "reason"}
    assert modules["role_refinement"]["writes"] is True

    one = assert_ok(await env.h.client.get("/api/v1/dspy/modules/context_synthesis", headers=env.alice))
    assert one == modules["context_synthesis"]
    flows = {w["name"]: w for w in assert_ok(await env.h.client.get("/api/v1/dspy/workflows", headers=env.alice))}
    assert flows["documentation_retrieval"]["runnable"] is True
    assert [s["module"] for s in flows["documentation_retrieval"]["stages"]] == [
        "documentation_query",
        "documentation_retrieval",
        "context_synthesis",
    ]
    assert flows["task_execution"]["runnable"] is False


async def test_a_run_answers_the_standard_shape_and_is_logged_as_the_caller(env: Env) -> None:
    env.up.chat(answer(result="Blue."))
    data = assert_ok(await env.run("model_switcher", {"task": "Name a primary color.", "complexity": "simple"}))
    assert data["success"] is True
    assert data["data"] == {"result": "Blue.", "model": "up", "reason": data["data"]["reason"]}
    assert data["data"]["reason"].startswith("up fits a simple execution task")
    assert data["module_type"] == "ModelSwitcher"
    assert 0 < data["execution_time"] < 30
    assert data["error"] is None

    (call,) = env.up.calls("chat")
    assert call.body["response_format"]["type"] == "json_schema"  # the JSON adapter's schema went upstream
    assert "Name a primary color." in call.body["messages"][-1]["content"]

    await env.h.runtime.logs.flush()
    async with env.h.runtime.database.session() as session:
        (row,) = (await session.execute(select(EpisodicLog).where(EpisodicLog.door == "dspy"))).scalars().all()
    assert (row.owner_id, row.module, row.served_model) == (env.alice_id, "model_switcher", "up")
    assert (row.prompt_tokens, row.completion_tokens) == (11, 5)  # the upstream's usage
    logs = assert_ok(await env.h.client.get("/api/v1/db/logs", params={"door": "dspy"}, headers=env.alice))
    assert [item["module"] for item in logs["items"]] == ["model_switcher"]
    query = "query($u: ID!) { userLogs(userId: $u) { door module ownerId } }"
    logged = data_of(await gql(env.h, query, {"u": env.alice_id}, headers=env.alice))
    assert logged == {"userLogs": [{"door": "dspy", "module": "model_switcher", "ownerId": env.alice_id}]}


@pytest.mark.parametrize(
    ("inputs", "field", "kind"),
    [
        ({}, "inputs.task", "missing"),
        ({"task": 5}, "inputs.task", "string_type"),
        ({"task": "x", "context_size": "12"}, "inputs.context_size", "int_type"),
        ({"task": "x", "complexity": "huge"}, "inputs.complexity", "literal_error"),
        ({"task": "x", "colour": "red"}, "inputs.colour", "extra_forbidden"),
    ],
)
async def test_bad_inputs_are_400s_naming_the_field(env: Env, inputs: dict[str, Any], field: str, kind: str) -> None:
    error = assert_error(await env.run("model_switcher", inputs), 400, "validation_error")
    assert field_names(error) == {field}
    assert error["details"]["fields"][0]["type"] == kind
    assert env.up.calls("chat") == []


async def test_inputs_that_are_not_an_object_and_unknown_modules(env: Env) -> None:
    response = await env.h.client.post(
        "/api/v1/dspy/modules/model_switcher/run", headers=env.alice, json={"inputs": ["task"]}
    )
    assert field_names(assert_error(response, 400, "validation_error")) == {"inputs"}
    error = assert_error(await env.run("no_such_module", {"task": "x"}), 404, "not_found_error")
    assert "model_switcher" in error["details"]["available"]
    assert_error(await env.h.client.get("/api/v1/dspy/modules/nope", headers=env.alice), 404, "not_found_error")
    error = assert_error(await env.run("model_switcher", {"task": "x"}, model="no-such-model"), 404, "not_found_error")
    assert error["details"]["model"] == "no-such-model"


async def test_credentials_without_the_ai_or_write_scope_are_refused(env: Env) -> None:
    _, key = await env.h.create_key(env.alice_id, scopes=["read", "write"])
    error = assert_error(
        await env.run("model_switcher", {"task": "x"}, headers=env.h.auth(key)), 403, "authorization_error"
    )
    assert error["details"]["scope"] == "ai"
    _, key = await env.h.create_key(env.alice_id, scopes=["read", "ai"])
    headers = env.h.auth(key)
    # The run route itself takes write (a run may write); role_refinement needs it even more so.
    assert_error(await env.run("model_switcher", {"task": "x"}, headers=headers), 403, "authorization_error")
    assert env.up.calls("chat") == []


@pytest.mark.parametrize("reply", [Ok("Sure! The answer is blue."), Ok('{"unexpected": 1}'), Garbage()])
async def test_an_answer_that_does_not_parse_is_a_clean_502(env: Env, reply: Any) -> None:
    env.up.chat(reply)
    response = await env.run("model_switcher", {"task": "Name a color."})
    if isinstance(reply, Garbage):  # not even an OpenAI response: the gateway's own 502
        error = assert_error(response, 502, "upstream_error")
    else:
        # DSPy's JSON adapter asks for a JSON structure; the gateway refuses an answer that breaks
        # it (docs/gateway.md), and the module's caller hears the model's output failed the module.
        error = assert_error(response, 502, "model_output_error")
        assert error["details"]["module"] == "model_switcher"
        assert error["details"]["model"] == "up"
        problems = error["details"]["problems"]
        assert problems
        assert len(problems) == error["details"]["attempts"]
        assert all("JSON" in problem or "schema" in problem or "required" in problem for problem in problems), problems
    assert "Traceback" not in response.text


async def test_an_upstream_that_is_down_is_a_503_and_the_switcher_moves_to_a_healthy_model(
    make_harness: Callable[..., Any],
) -> None:
    spare = FakeUpstream().start()
    try:
        # No local models: "up" and "spare" (another server, so another breaker) are all there is.
        models = {"spare": upstream_model(spare, price_per_1k_input=0.5)}
        async with dspy_env(make_harness, include_default_models=False, extra_models=models) as env:
            env.up.chat(*[Status(500)] * 15)
            for _ in range(2):  # 3 attempts each (the gateway retries; DSPy's own retries are off)
                assert_error(await env.run("model_switcher", {"task": "x"}), 503, "unavailable_error")
            # The breaker's threshold is 5 failures: the fifth opened it, the sixth attempt was refused
            # without a call.
            assert len(env.up.calls("chat")) == 5
            # The switcher would prefer "up" (it is free), but its breaker is open: it chooses the spare.
            spare.chat(answer(result="from the spare"))
            data = assert_ok(await env.run("model_switcher", {"task": "x", "complexity": "simple"}))["data"]
            assert data["model"] == "spare"
            assert data["result"] == "from the spare"
            assert "up (its breaker is open" in data["reason"]
            assert len(env.up.calls("chat")) == 5
            # A predictor that must use "up" (documentation_query has no choice to make) gets the 503.
            error = assert_error(await env.run("documentation_query", {"query": "x"}), 503, "unavailable_error")
            assert "CircuitOpen" in " ".join(error["details"]["reasons"])
    finally:
        spare.stop()


async def test_each_model_call_spends_the_callers_ai_budget(make_harness: Callable[..., Any]) -> None:
    limits = {"developer": {"ai": {"capacity": 1, "period_seconds": 3600}}}
    async with dspy_env(make_harness, rate_limits=limits) as env:
        env.up.chat(answer(result="one"), answer(result="two"))
        assert assert_ok(await env.run("model_switcher", {"task": "x"}))["data"]["result"] == "one"
        error = assert_error(await env.run("model_switcher", {"task": "x"}), 429, "rate_limit_error")
        assert error["details"]["policy"] == "ai"
        assert len(env.up.calls("chat")) == 1
        # Another user's budget is their own.
        assert assert_ok(await env.run("model_switcher", {"task": "x"}, headers=env.bob))["data"]["result"] == "two"
