"""What structured output costs on the local model, and how often it is valid.

Calls the gateway service in process (no HTTP) on SmolLM2-135M, N seeds per mode, same prompt,
same ``max_tokens``, temperature 1.0, modes interleaved seed by seed so drifts of the machine hit
all alike:

* ``plain``: free text (the baseline for latency);
* ``json_schema``: Trellis's grammar (``trellis.gateway.providers.gbnf``) and validation;
* ``json_schema (llama-cpp-python)``: the same schema through llama-cpp-python 0.3.36's own
  ``response_format`` grammar, called directly: the baseline for validity (no validation after);
* ``tools (required)``: a function call, grammar-constrained, arguments validated.

Prints, per mode: median and p90 latency, completion tokens, milliseconds per generated token
(what the grammar costs: answers differ in length), how many answers said ``stop`` /
``tool_calls``, ``length``, were refused by validation (a 502 after retries), and how many of the
finished answers parse and validate. The machine may be shared: the latencies are comparable
within one run only.

    .venv/bin/python bench/structured_output.py              # 30 seeds
    .venv/bin/python bench/structured_output.py --seeds 8    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema

from _common import fmt, median, percentile, render_table, result_header, write_results
from trellis.auth.schemas import Principal
from trellis.gateway.service import CallContext, Gateway, InvalidModelOutput
from trellis.gateway.structured import parse_json
from trellis.gateway.types import Message, ToolSpec
from trellis.runtime import build_runtime
from trellis.settings import Role, Settings
from trellis.storage import migrate

MODEL = "smollm2-135m"
MAX_TOKENS = 64
PROMPT = (
    'Write a two-line poem about the sea with a line break between the lines, and quote a sailor saying "land ahoy". '
    "Answer in JSON with title, poem and speaker."
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "poem": {"type": "string"}, "speaker": {"type": "string"}},
    "required": ["title", "poem", "speaker"],
    "additionalProperties": False,
}
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
MODES = ("plain", "json_schema", "json_schema (llama-cpp-python)", "tools (required)")


@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    finished: int = 0
    length: int = 0
    refused: int = 0
    valid: int = 0


def _valid_json(text: str) -> bool:
    try:
        return jsonschema.Draft202012Validator(SCHEMA).is_valid(parse_json(text))
    except ValueError:
        return False


async def _through_gateway(gateway: Gateway, ctx: CallContext, mode: str, seed: int, tally: Tally) -> None:
    name, model = gateway.resolve(MODEL)
    kwargs: dict[str, Any] = {}
    prompt = PROMPT
    if mode == "json_schema":
        kwargs["json_schema"] = SCHEMA
    elif mode == "tools (required)":
        kwargs.update(tools=[WEATHER], tool_choice="required")
        prompt = "What is the weather in Paris, in celsius?"
    request = await gateway.build_request(
        model, [Message("user", prompt)], max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, **kwargs
    )
    started = time.perf_counter()
    try:
        result = await gateway.complete(ctx, name, model, request)
    except InvalidModelOutput:
        tally.seconds.append(time.perf_counter() - started)
        tally.tokens.append(0)  # kept aligned with seconds; a refused call's tokens are in the log, not here
        tally.refused += 1
        return
    tally.seconds.append(time.perf_counter() - started)
    completion = result.completion
    tally.tokens.append(completion.usage.completion_tokens)
    if completion.finish_reason == "length":
        tally.length += 1
        return
    tally.finished += 1
    if mode == "plain":
        tally.valid += 1
    elif mode == "json_schema":
        tally.valid += _valid_json(completion.text)
    else:
        call = completion.tool_calls[0] if completion.tool_calls else None
        if call is not None:
            arguments = parse_json(call.arguments)
            tally.valid += jsonschema.Draft202012Validator(WEATHER.parameters).is_valid(arguments)


def _upstream_grammar(llama: Any, seed: int, tally: Tally) -> None:
    """llama-cpp-python's own schema grammar, as the provider used it before this change."""
    llama.reset()
    started = time.perf_counter()
    out = llama.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=seed,
        response_format={"type": "json_object", "schema": SCHEMA},
    )
    tally.seconds.append(time.perf_counter() - started)
    choice = out["choices"][0]
    tally.tokens.append(out["usage"]["completion_tokens"])
    if choice["finish_reason"] == "length":
        tally.length += 1
        return
    tally.finished += 1
    tally.valid += _valid_json(choice["message"]["content"] or "")


async def main(seeds: int) -> None:
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), gateway={"cache_enabled": False})
        runtime = build_runtime(settings)
        await migrate.upgrade(runtime.database)  # the episodic log's table: every call is logged
        runtime.start(index_sweep=False, workflow_worker=False)
        try:
            gateway = runtime.gateway
            ctx = CallContext(Principal("bench", "bench", Role.ADMIN, "api_key", frozenset()), door="cli")
            from llama_cpp import Llama

            from trellis.gateway.providers.llamacpp import model_path, quiet_llama_cpp

            quiet_llama_cpp()
            _, model = gateway.resolve(MODEL)
            llama = Llama(model_path=str(model_path(model)), n_ctx=model.context_window, verbose=False)
            tallies = {mode: Tally() for mode in MODES}
            await _through_gateway(gateway, ctx, "plain", 10_000, Tally())  # load the model once
            for seed in range(seeds):
                for mode in MODES:
                    if mode == "json_schema (llama-cpp-python)":
                        await asyncio.to_thread(_upstream_grammar, llama, seed, tallies[mode])
                    else:
                        await _through_gateway(gateway, ctx, mode, seed, tallies[mode])
        finally:
            await runtime.close()

    rows = []
    for mode, t in tallies.items():
        rows.append(
            [
                mode,
                fmt(median(t.seconds) * 1000, ".0f"),
                fmt(percentile(t.seconds, 90) * 1000, ".0f"),
                fmt(median([float(x) for x in t.tokens]) if t.tokens else None, ".0f"),
                fmt(median([1000 * s / n for s, n in zip(t.seconds, t.tokens, strict=False) if n]), ".0f"),
                str(t.finished),
                str(t.length),
                str(t.refused),
                f"{t.valid}/{t.finished}",
            ]
        )
    header = ["mode", "p50 ms", "p90 ms", "tokens p50", "ms/token p50", "finished", "length", "refused (502)"]
    header.append("valid/finished")
    print(f"SmolLM2-135M, {seeds} seeds per mode, max_tokens {MAX_TOKENS}, temperature 1.0")
    print(render_table(header, rows))
    plain = median(tallies["plain"].seconds)
    for mode in MODES[1:]:
        print(f"{mode}: p50 latency x{median(tallies[mode].seconds) / plain:.2f} of plain")
    document = result_header("structured_output", started_at) | {
        "seeds": seeds,
        "max_tokens": MAX_TOKENS,
        "modes": {mode: t.__dict__ for mode, t in tallies.items()},
    }
    print(f"results: {write_results('structured_output', started_at, json.loads(json.dumps(document)))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=30)
    asyncio.run(main(parser.parse_args().seeds))
