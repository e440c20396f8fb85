"""DSPy on the gateway: from outside through the OpenAI door (``dspy.LM("openai/<model>",
api_base=...)`` against a real Trellis server), in process through the engine, offline (no
connection leaves the machine), with no answer served for the wrong model or the wrong user."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import dspy
import pytest
from dspy.clients import model_metadata

from tests.auth.support import assert_ok
from tests.dspy.support import Env, NetworkGuard, answer, dspy_env, no_network, upstream_model
from tests.gateway.upstream import FakeUpstream, Ok
from tests.live_server import real_server
from trellis.dspy import OFFLINE_ENVIRONMENT
from trellis.dspy.engine import CallIdentity
from trellis.dspy.interface import call_scope

__all__ = ["no_network"]  # the fixture, imported for pytest


@pytest.fixture
async def env(make_harness: Callable[..., Any]) -> AsyncIterator[Env]:
    async with dspy_env(make_harness) as e:
        yield e


def test_importing_trellis_dspy_makes_dspy_and_litellm_offline() -> None:
    assert OFFLINE_ENVIRONMENT == {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


async def test_dspy_lm_from_outside_through_the_openai_door(
    env: Env, no_network: NetworkGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DSPy's model metadata is read once per process: forget it, so this call would fetch it if it could.
    monkeypatch.setattr(model_metadata, "_data", None)
    env.up.chat(Ok("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"))
    async with real_server(env.h.app) as url:
        key = env.alice["Authorization"].removeprefix("Bearer ")
        lm = dspy.LM("openai/up", api_base=f"{url}/v1", api_key=key, cache=False, num_retries=0)

        def ask() -> Any:
            with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
                return dspy.Predict("question -> answer")(question="What is the capital of France?")

        prediction = await asyncio.to_thread(ask)
    assert prediction.answer == "Paris"
    (call,) = env.up.calls("chat")
    assert "What is the capital of France?" in call.body["messages"][-1]["content"]
    await env.h.runtime.logs.flush()
    logs = assert_ok(await env.h.client.get("/api/v1/db/logs", params={"door": "openai"}, headers=env.alice))
    assert [item["requested_model"] for item in logs["items"]] == ["up"]
    assert no_network.attempts == []


async def test_in_process_runs_make_no_connection_off_the_machine(
    env: Env, no_network: NetworkGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_metadata, "_data", None)
    env.up.chat(answer(result="ok"))
    assert assert_ok(await env.run("model_switcher", {"task": "x"}))["data"]["result"] == "ok"
    assert no_network.attempts == []


async def test_no_answer_is_served_for_another_model_or_another_user(make_harness: Callable[..., Any]) -> None:
    other = FakeUpstream().start()
    try:
        async with dspy_env(make_harness, extra_models={"other": upstream_model(other)}) as env:
            env.up.chat(answer(processed_query="data kept up"))
            other.chat(answer(processed_query="data kept other"))
            inputs = {"query": "where is the data kept"}
            first = assert_ok(await env.run("documentation_query", inputs, model="up"))["data"]
            second = assert_ok(await env.run("documentation_query", inputs, model="other"))["data"]
            # The same prompt to two models: each model's own answer (DSPy's cache, keyed without the
            # destination, is off; the gateway's cache is keyed by model).
            assert (first["processed_query"], second["processed_query"]) == ("data kept up", "data kept other")
            # Asked again at temperature 0: the gateway's cache answers, per user.
            again = assert_ok(await env.run("documentation_query", inputs, model="up"))["data"]
            assert again["processed_query"] == "data kept up"
            assert len(env.up.calls("chat")) == 1
            env.up.chat(answer(processed_query="data kept bob"))
            bobs = assert_ok(await env.run("documentation_query", inputs, model="up", headers=env.bob))["data"]
            assert bobs["processed_query"] == "data kept bob"
            assert len(env.up.calls("chat")) == 2
    finally:
        other.stop()


async def test_a_call_without_a_caller_is_refused(env: Env) -> None:
    lm = env.h.runtime.dspy.lm_for("up")
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm), pytest.raises(Exception, match="needs the caller"):
        await predict.acall(question="x")
    assert env.up.calls("chat") == []


async def test_the_sync_engine_runs_on_the_servers_loop_from_a_worker_thread(env: Env) -> None:
    lm = env.h.runtime.dspy.lm_for("up")
    principal = await env.h.runtime.auth.authenticate(env.alice["Authorization"].removeprefix("Bearer "))
    identity = CallIdentity(principal, "test")
    env.up.chat(answer(answer="four"))

    def ask() -> Any:
        with call_scope(identity, lm):
            return dspy.Predict("question -> answer")(question="2+2?")

    assert (await asyncio.to_thread(ask)).answer == "four"
    # On the loop's own thread it would deadlock: refused.
    with call_scope(identity, lm), pytest.raises(Exception, match="deadlock"):
        dspy.Predict("question -> answer")(question="2+2?")
    assert len(env.up.calls("chat")) == 1


# --- native function calling ------------------------------------------------------------------------


def weather(city: str) -> str:
    """The weather in a city, today."""
    return f"Sunny in {city}"


class AskWithTools(dspy.Signature):  # type: ignore[misc]
    """Answer the question; call a tool when it helps."""

    question: str = dspy.InputField()
    tools: list[dspy.Tool] = dspy.InputField()
    calls: dspy.ToolCalls = dspy.OutputField()


def weather_call(city: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": f'{{"city": "{city}"}}'}}


async def test_native_function_calling_goes_through_the_gateway_and_back(env: Env) -> None:
    """DSPy's adapters pass a signature's tools natively (the engine says it supports function
    calling): they reach the model as OpenAI tools with their JSON schemas, and the model's call
    comes back as DSPy's ``ToolCalls``, which runs the function."""
    lm = env.h.runtime.dspy.lm_for("up")
    principal = await env.h.runtime.auth.authenticate(env.alice["Authorization"].removeprefix("Bearer "))
    for adapter in ("json", "chat"):
        env.up.reset()
        env.up.chat(Ok(text="", finish_reason="tool_calls", tool_calls=(weather_call("Lima"),)))
        native = dspy.JSONAdapter() if adapter == "json" else dspy.ChatAdapter(use_native_function_calling=True)
        with call_scope(CallIdentity(principal, "tools"), lm), dspy.context(adapter=native):
            result = await dspy.Predict(AskWithTools).acall(question="Weather in Lima?", tools=[dspy.Tool(weather)])
        [call] = result.calls.tool_calls
        assert (call.name, call.args) == ("weather", {"city": "Lima"}), adapter
        assert call.execute(functions=[dspy.Tool(weather)]) == "Sunny in Lima"
        [sent] = env.up.calls("chat")
        [tool] = sent.body["tools"]
        assert tool["function"]["name"] == "weather"
        assert tool["function"]["description"].startswith("The weather in a city")
        assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"
        assert sent.body["tool_choice"] == "auto"
    await env.h.runtime.logs.flush()
    logged = assert_ok(await env.h.client.get("/api/v1/db/logs", params={"door": "dspy"}, headers=env.alice))
    assert [row["finish_reason"] for row in logged["items"][:2]] == ["tool_calls", "tool_calls"]


async def test_a_tool_call_with_arguments_that_are_not_json_is_a_clean_error(env: Env) -> None:
    lm = env.h.runtime.dspy.lm_for("up")
    principal = await env.h.runtime.auth.authenticate(env.alice["Authorization"].removeprefix("Bearer "))
    broken = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{city: Lima"}}
    env.up.chat(Ok(text="", finish_reason="tool_calls", tool_calls=(broken,)))
    with call_scope(CallIdentity(principal, "tools"), lm), pytest.raises(Exception, match="not valid JSON"):
        await dspy.Predict(AskWithTools).acall(question="Weather in Lima?", tools=[dspy.Tool(weather)])


async def test_a_streamed_function_call_arrives_as_tool_call_deltas(env: Env) -> None:
    from dspy.lm15 import FunctionTool, Message, Request, ToolCallDelta

    from trellis.dspy.engine import AsyncGatewayEngine

    principal = await env.h.runtime.auth.authenticate(env.alice["Authorization"].removeprefix("Bearer "))

    async def admit(identity: CallIdentity) -> None:
        return None

    engine = AsyncGatewayEngine(env.h.runtime.gateway, "up", admit)
    request = Request(
        model="up",
        messages=(Message.user("Weather in Lima?"),),
        tools=(FunctionTool("weather", "The weather in a city.", {"type": "object", "properties": {"city": {}}}),),
    )
    env.up.chat(Ok(text="", finish_reason="tool_calls", tool_calls=(weather_call("Lima"),)))
    with dspy.context(trellis_call=CallIdentity(principal, "tools")):
        events = [event async for event in engine.stream(request)]
    deltas = [event.delta for event in events if isinstance(getattr(event, "delta", None), ToolCallDelta)]
    assert {(d.id, d.name, d.part_index) for d in deltas if d.name} == {("call_1", "weather", 0)}
    assert "".join(d.input for d in deltas) == '{"city": "Lima"}'
    assert events[-1].finish_reason == "tool_call"
    assert env.up.calls("chat")[0].body["stream"] is True
