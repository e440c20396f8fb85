"""OpenAI-style tool calling on the real local model (SmolLM2-135M through llama.cpp).

Calls are grammar-constrained, so their arguments validate against the function's schema; the
gateway checks them again. Driven by the official ``openai`` SDK (in process, and against a real
``trellis serve`` process) and by LangChain's ``ChatOpenAI(...).bind_tools``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from tests.conftest import ADMIN_KEY, JWT_SECRET, Harness
from tests.gateway.test_doors_local import CHAT_MODEL, openai_client
from tests.processes import Process, start_server, wait_ready
from tests.sweeps import seeds

WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 20}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS: Any = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_PARAMS},
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "The time in a timezone", "parameters": TIME_PARAMS},
    },
]
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def assert_valid_call(call: Any) -> None:
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name in SCHEMAS
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


async def _create(client: AsyncOpenAI, seed: int, **body: Any) -> Any:
    fields: dict[str, Any] = {"max_tokens": 48, "temperature": 0.8, "seed": seed, "messages": ASK, **body}
    return await client.chat.completions.create(model=CHAT_MODEL, **fields)


async def test_required_always_calls_a_function_with_valid_arguments(harness: Harness) -> None:
    async with openai_client(harness) as client:
        for seed in seeds(3, 6):
            answer = await _create(client, seed, tools=TOOLS, tool_choice="required")
            choice = answer.choices[0]
            assert choice.finish_reason == "tool_calls", (seed, choice)
            assert choice.message.content is None
            [call] = choice.message.tool_calls
            assert_valid_call(call)


async def test_a_named_function_is_the_one_called(harness: Harness) -> None:
    async with openai_client(harness) as client:
        for seed in seeds(2, 3):
            answer = await _create(
                client, seed, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}
            )
            [call] = answer.choices[0].message.tool_calls
            assert call.function.name == "get_time"
            assert_valid_call(call)
            assert answer.choices[0].finish_reason == "tool_calls"


async def test_auto_answers_with_a_valid_call_or_plain_text(harness: Harness) -> None:
    async with openai_client(harness) as client:
        kinds = []
        for seed in seeds(3, 6):
            choice = (await _create(client, seed, tools=TOOLS, tool_choice="auto")).choices[0]
            if choice.message.tool_calls:
                assert choice.finish_reason == "tool_calls"
                [call] = choice.message.tool_calls
                assert_valid_call(call)
                kinds.append("call")
            else:
                assert choice.finish_reason in ("stop", "length")
                assert choice.message.content
                assert not choice.message.content.startswith("{")
                kinds.append("text")
    assert kinds  # which one the small model picks varies; both are legitimate


async def test_none_never_calls(harness: Harness) -> None:
    async with openai_client(harness) as client:
        choice = (await _create(client, 0, tools=TOOLS, tool_choice="none")).choices[0]
    assert not choice.message.tool_calls
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.content


async def test_streamed_call_arrives_in_openai_deltas_and_matches_the_whole_answer(harness: Harness) -> None:
    async with openai_client(harness) as client:
        whole = (await _create(client, 3, tools=TOOLS, tool_choice="required", temperature=0)).choices[0]
        stream = await _create(client, 3, tools=TOOLS, tool_choice="required", temperature=0, stream=True)
        pieces: list[Any] = []
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                pieces.extend(choice.delta.tool_calls or [])
                assert not choice.delta.content
                finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    head = pieces[0]
    assert head.id.startswith("call_")
    assert head.function.name == whole.message.tool_calls[0].function.name
    assert all(p.index == 0 and p.id is None for p in pieces[1:])
    assert len(pieces) > 2  # the arguments come as they are generated, not in one piece
    arguments = "".join(p.function.arguments or "" for p in pieces)
    assert arguments == whole.message.tool_calls[0].function.arguments
    jsonschema.validate(json.loads(arguments), SCHEMAS[head.function.name])


async def test_tool_results_continue_the_conversation(harness: Harness) -> None:
    async with openai_client(harness) as client:
        first = (await _create(client, 1, tools=TOOLS, tool_choice="required", temperature=0)).choices[0]
        [call] = first.message.tool_calls
        messages = [
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "degrees": 21}'},
        ]
        answer = await client.chat.completions.create(
            model=CHAT_MODEL, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=32, temperature=0
        )
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason in ("stop", "length")


async def test_langchain_bind_tools_gets_tool_calls(harness: Harness) -> None:
    def get_weather(city: str, unit: str) -> str:
        """The weather in a city.

        Args:
            city: the city
            unit: c or f
        """
        return "sunny"

    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trellis.test") as http:
        model = ChatOpenAI(
            model=CHAT_MODEL,
            base_url="http://trellis.test/v1",
            api_key=ADMIN_KEY,  # type: ignore[arg-type]
            http_async_client=http,
            max_retries=0,
            temperature=0.5,
            max_tokens=48,  # type: ignore[call-arg]
            seed=2,
        )
        bound = model.bind_tools([get_weather], tool_choice="required")
        message = await bound.ainvoke("What is the weather in Oslo, in celsius?")
    assert isinstance(message, AIMessage)
    [call] = message.tool_calls
    assert call["name"] == "get_weather"
    assert set(call["args"]) == {"city", "unit"}
    assert str(call["id"]).startswith("call_")


# --- a real `trellis serve` process and the official SDK over HTTP ---------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Process]:
    env = {
        **os.environ,
        "TRELLIS_DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_JWT_SECRET": JWT_SECRET,
        "TRELLIS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "TRELLIS_LOG_LEVEL": "WARNING",
    }
    process = start_server("trellis", env, tmp_path)
    try:
        await wait_ready(process)
        yield process
    finally:
        process.stop()


async def test_official_sdk_against_a_real_trellis_server(server: Process) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "lines": {"type": "array", "items": {"type": "string"}}},
        "required": ["title", "lines"],
    }
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=120)
    try:
        stops = 0
        for seed in seeds(2, 4):
            answer = await client.chat.completions.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": 'A two-line poem with a "quoted" word, as JSON.'}],
                response_format={"type": "json_schema", "json_schema": {"name": "poem", "schema": schema}},
                max_tokens=64,
                temperature=1.0,
                seed=seed,
            )
            choice = answer.choices[0]
            if choice.finish_reason == "stop":
                stops += 1
                jsonschema.validate(json.loads(choice.message.content or ""), schema)
        called = await client.chat.completions.create(
            model=CHAT_MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=48, temperature=0
        )
    finally:
        await client.close()
    assert stops >= 1
    assert called.choices[0].finish_reason == "tool_calls"
    [call] = called.choices[0].message.tool_calls or []
    assert_valid_call(call)
