"""Structured output on the real local model (SmolLM2-135M through llama.cpp), over many seeds.

The prompts ask for poems and quotations, which invite newlines, tabs and quotes inside JSON
strings: the case where llama-cpp-python 0.3.36's own schema grammar lets a raw control character
through and the answer ends ``stop`` without parsing. Every answer that says ``stop`` must parse
and validate; ``length`` answers were cut short and say so.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from openai import AsyncOpenAI, InternalServerError

from tests.conftest import ADMIN_KEY, Harness
from tests.gateway.test_doors_local import CHAT_MODEL, log_rows, openai_client
from tests.sweeps import seeds
from trellis.gateway.providers import gbnf
from trellis.gateway.structured import parse_json

SEEDS = seeds(4, 32)
POEM: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "poem": {"type": "string"}, "speaker": {"type": "string"}},
    "required": ["title", "poem", "speaker"],
    "additionalProperties": False,
}
POEM_PROMPT = (
    'Write a two-line poem about the sea, one line per row (a line break between them), and quote a sailor saying "'
    'land ahoy" in double quotes inside it. Answer in JSON with title, poem and speaker.'
)
POEM_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "poem", "schema": POEM}}


def _valid(content: str, schema: dict[str, Any] | None) -> bool:
    try:
        value = parse_json(content)
    except ValueError:
        return False
    if schema is None:
        return isinstance(value, dict)
    return jsonschema.Draft202012Validator(schema).is_valid(value)


async def _tally(
    client: AsyncOpenAI, response_format: Any, schema: dict[str, Any] | None, seeds: range = SEEDS
) -> dict[str, int]:
    counts = {"stop": 0, "length": 0}
    for seed in seeds:
        answer = await client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": POEM_PROMPT}],
            response_format=response_format,
            max_tokens=96,
            temperature=1.0,
            seed=seed,
        )
        choice = answer.choices[0]
        content = choice.message.content or ""
        counts[choice.finish_reason] += 1
        if choice.finish_reason == "stop":
            assert _valid(content, schema), f"seed {seed}: stop with invalid content {content!r}"
    return counts


def test_upstream_grammar_lets_control_characters_into_strings() -> None:
    """The root cause, shown on llama-cpp-python itself: its converter's string character is
    ``[^"\\]``; ours leaves out every control character."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    upstream = json_schema_to_gbnf(json.dumps(POEM))
    assert 'char ::= [^"\\\\] |' in upstream
    ours = gbnf.schema_grammar(POEM)
    assert f"char ::= {gbnf.JSON_CHAR}" in ours
    assert "\\x00-\\x1F" in gbnf.JSON_CHAR


async def test_json_schema_over_many_seeds_never_lies(harness: Harness) -> None:
    async with openai_client(harness) as client:
        counts = await _tally(client, POEM_FORMAT, POEM)
    # Most answers finish; all of those validated above.
    assert counts["stop"] >= len(SEEDS) // 2, counts


async def test_json_object_over_many_seeds_never_lies(harness: Harness) -> None:
    async with openai_client(harness) as client:
        json_seeds = seeds(3, 12)
        counts = await _tally(client, {"type": "json_object"}, None, json_seeds)
    assert counts["stop"] >= len(json_seeds) // 2, counts


async def test_streamed_json_schema_ends_valid_or_says_length(harness: Harness) -> None:
    async with openai_client(harness) as client:
        for seed in seeds(2, 8):
            stream = await client.chat.completions.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": POEM_PROMPT}],
                response_format=POEM_FORMAT,
                max_tokens=96,
                temperature=1.0,
                seed=seed,
                stream=True,
            )
            parts: list[str] = []
            finish = None
            async for chunk in stream:
                for choice in chunk.choices:
                    parts.append(choice.delta.content or "")
                    finish = choice.finish_reason or finish
            assert finish in ("stop", "length")
            if finish == "stop":
                assert _valid("".join(parts), POEM), (seed, "".join(parts))


async def test_truncated_structured_answer_says_length(harness: Harness) -> None:
    async with openai_client(harness) as client:
        answer = await client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": POEM_PROMPT}],
            response_format=POEM_FORMAT,
            max_tokens=6,
            temperature=0,
        )
    assert answer.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        parse_json(answer.choices[0].message.content or "")


# A schema whose numeric bounds the grammar cannot express: validation after generation is what
# refuses the model's out-of-range number.
BOUNDED: dict[str, Any] = {
    "type": "object",
    "properties": {"year": {"type": "integer", "minimum": 90000, "maximum": 90001}},
    "required": ["year"],
    "additionalProperties": False,
}


async def test_answer_the_grammar_let_through_but_the_schema_refuses_is_a_502(harness: Harness) -> None:
    """Deterministic (temperature 0): no retry, a 502 naming the problem, and an error row in the log."""
    async with openai_client(harness) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat.completions.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": "In which year did the Titanic sink? Answer in JSON."}],
                response_format={"type": "json_schema", "json_schema": {"name": "year", "schema": BOUNDED}},
                max_tokens=24,
                temperature=0,
            )
    assert caught.value.status_code == 502
    body: Any = caught.value.body
    assert "90000" in body["message"] or "minimum" in body["message"], body
    rows = await log_rows(harness)
    assert [r["status"] for r in rows] == ["error"]
    assert rows[0]["error"].startswith("invalid structured output")


async def test_sampled_invalid_answers_are_retried_with_new_seeds(harness: Harness) -> None:
    async with openai_client(harness) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat.completions.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": "In which year did the Titanic sink? Answer in JSON."}],
                response_format={"type": "json_schema", "json_schema": {"name": "year", "schema": BOUNDED}},
                max_tokens=24,
                temperature=0.8,
                seed=7,
            )
    assert caught.value.status_code == 502
    rows = await log_rows(harness)
    # The first try and structured_retries (2) more, each logged as an error with its answer.
    assert len(rows) == 3
    assert all(r["status"] == "error" and r["error"].startswith("invalid structured output") for r in rows)


async def test_analyze_door_uses_the_same_guarantee(harness: Harness) -> None:
    """REST /api/v1/ai/analyze (extraction with a schema) over several seeds: 200s validate."""
    schema = {
        "type": "object",
        "properties": {"quote": {"type": "string"}, "who": {"type": "string"}},
        "required": ["quote", "who"],
    }
    for seed in seeds(2, 6):
        response = await harness.client.post(
            "/api/v1/ai/analyze",
            headers=Harness.auth(ADMIN_KEY),
            json={
                "content": 'The captain said "land ahoy!"\nThen the crew\tcheered.',
                "analysis_type": "extraction",
                "schema": schema,
                "max_tokens": 64,
                "temperature": 1.0,
                "seed": seed,
            },
        )
        if response.status_code == 200:
            data = response.json()["data"]
            if data["finish_reason"] == "stop":
                jsonschema.validate(data["result"], schema)
        else:
            assert response.status_code == 502, response.text
