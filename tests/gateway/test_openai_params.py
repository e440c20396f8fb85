"""The OpenAI door never drops a parameter silently: what it cannot honour is a 400 naming it.

Each request here would reach a scripted upstream (a real HTTP server) if it were accepted; every
rejection is checked to have sent nothing upstream.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Harness
from tests.gateway import test_upstream as base
from tests.gateway.test_upstream import Env

servers = base.servers
open_gateway = base.open_gateway
env = base.env

CHAT = "/v1/chat/completions"
ASK: list[dict[str, Any]] = [{"role": "user", "content": "Hi"}]
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


async def refused(env: Env, body: dict[str, Any], path: str = CHAT) -> dict[str, Any]:
    response = await env.h.client.post(path, headers=Harness.auth(ADMIN_KEY), json={"model": "up", **body})
    assert response.status_code == 400, response.text
    assert env.up.calls("chat") == []  # nothing was sent on
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("frequency_penalty", 0.5),
        ("presence_penalty", -1.0),
        ("store", True),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("prediction", {"type": "content", "content": "x"}),
        ("reasoning_effort", "high"),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("web_search_options", {}),
        ("n", 2),
        ("best_of", 3),
        ("some_future_knob", 1),
    ],
)
async def test_a_parameter_that_cannot_be_honoured_is_a_400_naming_it(env: Env, field: str, value: Any) -> None:
    error = await refused(env, {"messages": ASK, field: value})
    assert error["param"] == field
    assert field in error["message"]


async def test_defaults_and_inert_fields_are_accepted(env: Env) -> None:
    body = {
        "model": "up",
        "messages": ASK,
        "logprobs": False,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "n": 1,
        "user": "someone",
        "metadata": {"k": "v"},
        "store": False,
        "parallel_tool_calls": True,
    }
    response = await env.h.client.post(CHAT, headers=Harness.auth(ADMIN_KEY), json=body)
    assert response.status_code == 200, response.text


async def test_text_completions_refuse_what_they_cannot_honour(env: Env) -> None:
    for field, value in (("echo", True), ("suffix", "end"), ("response_format", {"type": "json_object"})):
        error = await refused(env, {"prompt": "Hi", field: value}, "/v1/completions")
        assert error["param"] == field


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": [1]}}},
            "response_format.json_schema.schema",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": 3}}}
                ]
            },
            "tools.0.function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools.0.function.parameters",
        ),
        ({"tools": [TOOL, TOOL]}, "tools.1.function.name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "tool_choice": "always"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}},
            "tool_choice.function.name",
        ),
    ],
)
async def test_malformed_tools_and_schemas_are_400s_naming_the_field(
    env: Env, body: dict[str, Any], param: str
) -> None:
    error = await refused(env, {"messages": ASK, **body})
    assert error["param"] == param, error


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "content": "42"}], "messages.0.tool_call_id"),
        ([{"role": "tool", "tool_call_id": "call_nowhere", "content": "42"}], "messages.0.tool_call_id"),
        (
            [
                {
                    "role": "user",
                    "content": "x",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                }
            ],
            "messages.0.tool_calls",
        ),
        ([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}], "messages.0.tool_calls.0.function"),
    ],
)
async def test_malformed_tool_conversations_are_400s(env: Env, messages: list[dict[str, Any]], param: str) -> None:
    error = await refused(env, {"messages": messages})
    assert error["param"] == param, error
