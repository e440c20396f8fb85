"""Structured output and tools against an OpenAI-compatible upstream (a real HTTP server, scripted).

What the client sends (``response_format``, ``tools``, ``tool_choice``, ``parallel_tool_calls``)
reaches the upstream unchanged; what comes back is held to the same rule as the local model: a
``stop`` / ``tool_calls`` answer validates, or it is retried (sampled) and then refused with a 502.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import ADMIN_KEY, Harness
from tests.gateway import test_upstream as base
from tests.gateway.test_upstream import Env, sdk
from tests.gateway.upstream import Ok

# The upstream tests' fixtures: the fake servers (module scope), the configured gateway, an env.
servers = base.servers
open_gateway = base.open_gateway
env = base.env

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CITY: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call(arguments: str, name: str = "get_weather", ident: str = "call_up_1") -> dict[str, Any]:
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}


async def test_tools_and_formats_reach_the_upstream_unchanged(env: Env) -> None:
    env.up.chat(Ok("", finish_reason="tool_calls", tool_calls=(call('{"city": "Paris"}'),)))
    async with sdk(env.h) as client:
        answer = await client.chat.completions.create(
            model="up",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            response_format=CITY,
        )
    [received] = env.up.calls("chat")
    assert received.body["tools"] == [WEATHER]
    assert received.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert received.body["parallel_tool_calls"] is False
    assert received.body["response_format"] == CITY
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [tool_call] = choice.message.tool_calls or []
    assert tool_call.id == "call_up_1"
    assert tool_call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    # The episodic log shows what was called.
    await env.h.runtime.logs.flush()
    logs = await env.h.client.get("/api/v1/db/logs", headers=Harness.auth(ADMIN_KEY))
    [row] = logs.json()["data"]["items"]
    assert row["finish_reason"] == "tool_calls"
    assert json.loads(row["response"]) == {
        "tool_calls": [{"id": "call_up_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
    }


async def test_a_conversation_with_tool_results_is_forwarded_whole(env: Env) -> None:
    env.up.chat(Ok("It is sunny in Paris."))
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call('{"city": "Paris"}')]},
        {"role": "tool", "tool_call_id": "call_up_1", "content": '{"sky": "sunny"}'},
    ]
    async with sdk(env.h) as client:
        answer = await client.chat.completions.create(model="up", messages=messages, tools=[WEATHER])
    assert answer.choices[0].message.content == "It is sunny in Paris."
    [received] = env.up.calls("chat")
    sent = received.body["messages"]
    assert sent[1]["tool_calls"] == [call('{"city": "Paris"}')]
    assert sent[1]["content"] is None
    assert sent[2] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_up_1"}


async def test_streamed_tool_call_deltas_are_relayed_in_openai_chunks(env: Env) -> None:
    env.up.chat(Ok("", finish_reason="tool_calls", tool_calls=(call('{"city": "Oslo", "unit": "c"}'),)))
    async with sdk(env.h) as client:
        stream = await client.chat.completions.create(
            model="up", messages=[{"role": "user", "content": "Oslo?"}], tools=[WEATHER], stream=True
        )
        pieces: list[Any] = []
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                pieces.extend(choice.delta.tool_calls or [])
                finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert pieces[0].id == "call_up_1"
    assert pieces[0].function.name == "get_weather"
    assert len(pieces) == 3  # the head, then the arguments in two pieces
    arguments = "".join(p.function.arguments or "" for p in pieces)
    assert json.loads(arguments) == {"city": "Oslo", "unit": "c"}


async def test_invalid_json_that_says_stop_is_a_502_not_a_success(env: Env) -> None:
    env.up.chat(Ok('{"city": "Par\nis"}'))  # a raw newline inside a string: not JSON
    async with sdk(env.h) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="up", messages=[{"role": "user", "content": "City?"}], response_format=CITY, temperature=0
            )
    assert caught.value.status_code == 502
    assert "not valid JSON" in caught.value.message
    assert len(env.up.calls("chat")) == 1  # deterministic: no retry


async def test_a_sampled_invalid_answer_is_retried_with_a_new_seed(env: Env) -> None:
    env.up.chat(Ok('{"town": "Paris"}'), Ok('{"city": "Paris"}'))
    async with sdk(env.h) as client:
        answer = await client.chat.completions.create(
            model="up", messages=[{"role": "user", "content": "City?"}], response_format=CITY, temperature=0.7, seed=41
        )
    assert json.loads(answer.choices[0].message.content or "") == {"city": "Paris"}
    seeds = [r.body["seed"] for r in env.up.calls("chat")]
    assert seeds == [41, 42]


async def test_retries_are_bounded_then_502(env: Env) -> None:
    env.up.chat(*[Ok("[1, 2]")] * 5)
    async with sdk(env.h) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="up",
                messages=[{"role": "user", "content": "Object?"}],
                response_format={"type": "json_object"},
                temperature=1.0,
            )
    assert caught.value.status_code == 502
    assert "not a JSON object" in caught.value.message
    assert len(env.up.calls("chat")) == 3  # one try and structured_retries (2)


async def test_tool_arguments_that_break_the_schema_are_refused(env: Env) -> None:
    env.up.chat(Ok("", finish_reason="tool_calls", tool_calls=(call('{"city": "Paris", "unit": "kelvin"}'),)))
    async with sdk(env.h) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="up",
                messages=[{"role": "user", "content": "Paris?"}],
                tools=[WEATHER],
                tool_choice="required",
                temperature=0,
            )
    assert caught.value.status_code == 502
    assert "arguments of 'get_weather'" in caught.value.message


async def test_required_tool_choice_answered_with_text_is_refused(env: Env) -> None:
    env.up.chat(Ok("I would rather chat."))
    async with sdk(env.h) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="up", messages=[{"role": "user", "content": "Paris?"}], tools=[WEATHER], tool_choice="required"
            )
    assert caught.value.status_code == 502
    assert "without calling a function" in caught.value.message


async def test_a_truncated_answer_says_length_and_is_returned(env: Env) -> None:
    env.up.chat(Ok('{"city": "Pa', finish_reason="length"))
    async with sdk(env.h) as client:
        answer = await client.chat.completions.create(
            model="up", messages=[{"role": "user", "content": "City?"}], response_format=CITY, temperature=0
        )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == '{"city": "Pa'


async def test_a_stream_that_ends_invalid_ends_with_an_error_not_stop(env: Env) -> None:
    env.up.chat(Ok('{"city": 12}'))
    async with sdk(env.h) as client:
        stream = await client.chat.completions.create(
            model="up", messages=[{"role": "user", "content": "City?"}], response_format=CITY, stream=True
        )
        finishes: list[str | None] = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                finishes.extend(c.finish_reason for c in chunk.choices)
    assert "stop" not in finishes
    assert "does not match the schema" in caught.value.message
