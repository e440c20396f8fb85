"""Every door of the gateway on the real local models, with no configuration at all.

SmolLM2-135M-Instruct runs through llama.cpp and all-MiniLM-L6-v2 through onnxruntime, exactly as a
fresh install serves them. The OpenAI door is driven by the official ``openai`` SDK; every call is
then looked up in the episodic log and in ``/metrics``. Answers are kept short (``max_tokens`` of
8 to 64) so the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jsonschema
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, Harness
from tests.live_server import real_server as serve
from trellis.gateway.providers.llamacpp import model_path
from trellis.gateway.tasks import extract_code_blocks
from trellis.gateway.types import Message

CHAT_MODEL = "smollm2-135m"
EMBED_MODEL = "minilm-l6"
SEED_ALIASES = ("cursor-native-ai", "external-model", "specialized-agent")
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "age": {"type": "integer"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


# --- helpers ---------------------------------------------------------------------------------------


@asynccontextmanager
async def openai_client(h: Harness, key: str = ADMIN_KEY) -> AsyncIterator[AsyncOpenAI]:
    """The official SDK, talking to the app in-process."""
    transport = httpx.ASGITransport(app=h.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trellis.test") as http:
        yield AsyncOpenAI(base_url="http://trellis.test/v1", api_key=key, http_client=http, max_retries=0)


async def log_rows(h: Harness, key: str = ADMIN_KEY, **params: Any) -> list[dict[str, Any]]:
    """The caller's episodic log, newest first, once everything submitted so far is written."""
    await h.runtime.logs.flush()
    response = await h.client.get("/api/v1/db/logs", params=params, headers=Harness.auth(key))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]["items"]
    return items


async def only_row(h: Harness, **params: Any) -> dict[str, Any]:
    rows = await log_rows(h, **params)
    assert len(rows) == 1, rows
    return rows[0]


def row_for(rows: list[dict[str, Any]], request_id: str | None) -> dict[str, Any]:
    """The log row of one HTTP request (rows written within one tick of the test clock share
    ``created_at``, so their order says nothing)."""
    assert request_id
    [row] = [r for r in rows if r["request_id"] == request_id]
    return row


async def prompt_tokens_of(h: Harness, messages: list[Message]) -> int:
    """What the model's own chat template makes of these messages, counted by its tokenizer."""
    gateway = h.runtime.gateway
    _, model = gateway.resolve(CHAT_MODEL)
    counted = await gateway.provider_for(model).count_tokens(model, messages)
    assert counted is not None
    return counted


async def metric(h: Harness, name: str, **labels: str) -> float:
    """The sum of a sample over every label set that includes ``labels`` (0 when absent)."""
    response = await h.client.get("/metrics")
    assert response.status_code == 200
    total = 0.0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            lines = block.splitlines()
            events.append((lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: "))))
    return events


def assert_row_matches(row: dict[str, Any], *, door: str, prompt_tokens: int, completion_tokens: int) -> None:
    assert row["door"] == door
    assert row["requested_model"] == CHAT_MODEL
    assert row["served_model"] == CHAT_MODEL
    assert row["provider"] == "llamacpp"
    assert row["status"] == "ok"
    assert row["error"] is None
    assert row["prompt_tokens"] == prompt_tokens
    assert row["completion_tokens"] == completion_tokens


# --- the OpenAI door, through the official SDK -------------------------------------------------------


async def test_openai_chat_completion(harness: Harness) -> None:
    messages = [{"role": "user", "content": "Name a primary color."}]
    async with openai_client(harness) as client:
        completion = await client.chat.completions.create(
            model=CHAT_MODEL, messages=messages, max_tokens=8, temperature=0
        )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.message.content.strip()
    assert completion.model == CHAT_MODEL
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # The prompt is counted as the model saw it (its chat template), and an answer cut at
    # max_tokens used exactly max_tokens.
    assert usage.prompt_tokens == await prompt_tokens_of(harness, [Message("user", "Name a primary color.")])
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 8
    else:
        assert choice.finish_reason == "stop"
        assert 0 < usage.completion_tokens <= 8

    row = await only_row(harness)
    assert row["request_id"] == completion._request_id
    assert_row_matches(row, door="openai", prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
    assert row["response"] == choice.message.content
    assert row["messages"] == messages
    assert row["cached"] is False
    assert row["ttft_ms"] is None


async def test_openai_chat_stream_assembles_and_reports_usage(harness: Harness) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    async with openai_client(harness) as client:
        plain = [
            chunk
            async for chunk in await client.chat.completions.create(
                model=CHAT_MODEL, messages=messages, max_tokens=12, temperature=0, stream=True
            )
        ]
        stream = await client.chat.completions.create(
            model=CHAT_MODEL,
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        with_usage = [chunk async for chunk in stream]

    def text_of(chunks: list[Any]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # Without include_usage no chunk carries usage; the last choice says why the answer ended.
    assert all(c.usage is None for c in plain)
    assert plain[0].choices[0].delta.role == "assistant"
    assert plain[-1].choices[0].finish_reason in ("stop", "length")
    assert text_of(plain).strip()
    # With it, one final chunk has no choices and the usage; the text is the same (temperature 0,
    # and streams are never cached).
    *answer, usage_chunk = with_usage
    assert usage_chunk.choices == []
    usage = usage_chunk.usage
    assert usage is not None
    assert all(c.usage is None for c in answer)
    assert text_of(answer) == text_of(plain)
    assert 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens == await prompt_tokens_of(harness, [Message("user", "Say hello.")])

    rows = await log_rows(harness)
    assert len(rows) == 2
    assert_row_matches(
        row_for(rows, stream.response.headers["x-request-id"]),
        door="openai",
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )
    for row in rows:
        assert row["response"] == text_of(plain)
        assert row["cached"] is False
        assert row["ttft_ms"] is not None
        assert 0 < row["ttft_ms"] <= row["latency_ms"]


async def test_openai_json_schema_response_validates(harness: Harness) -> None:
    async with openai_client(harness) as client:
        completion = await client.chat.completions.create(
            model="specialized-agent",
            messages=[{"role": "user", "content": "Alice is 30 years old. Give her name and age as JSON."}],
            max_tokens=48,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}},
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert choice.message.content is not None
    person = json.loads(choice.message.content)
    jsonschema.validate(person, PERSON_SCHEMA)

    row = await only_row(harness)
    assert completion.usage is not None
    assert_row_matches(
        row,
        door="openai",
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
    )


async def test_openai_json_object_mode_parses(harness: Harness) -> None:
    async with openai_client(harness) as client:
        completion = await client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": 'Reply with the JSON object {"ok": true} and nothing else.'}],
            max_tokens=32,
            temperature=0,
            response_format={"type": "json_object"},
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert choice.message.content is not None
    assert isinstance(json.loads(choice.message.content), dict)


async def test_openai_text_completion(harness: Harness) -> None:
    async with openai_client(harness) as client:
        completion = await client.completions.create(
            model="external-model", prompt="The capital of France is", max_tokens=8, temperature=0
        )
    choice = completion.choices[0]
    assert choice.text.strip()
    assert choice.finish_reason in ("stop", "length")
    assert completion.model == CHAT_MODEL  # the alias resolves to the local chat model
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < usage.completion_tokens <= 8

    row = await only_row(harness)
    assert_row_matches(row, door="openai", prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
    assert row["response"] == choice.text


async def test_openai_embeddings(harness: Harness) -> None:
    texts = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Interest rates rose again."]
    async with openai_client(harness) as client:
        # The SDK asks for base64 by default and decodes it; ask for floats too.
        default = await client.embeddings.create(model=EMBED_MODEL, input=texts)
        floats = await client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")

    for result in (default, floats):
        assert result.model == EMBED_MODEL
        assert [d.index for d in result.data] == [0, 1, 2]
        assert all(len(d.embedding) == 384 for d in result.data)
        assert all(math.isclose(math.hypot(*d.embedding), 1.0, abs_tol=1e-3) for d in result.data)
    for a, b in zip(default.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)  # float32 on the wire
    cat, kitten, rates = (d.embedding for d in floats.data)

    def cosine(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    assert cosine(cat, kitten) > cosine(cat, rates) + 0.2
    assert floats.usage.prompt_tokens > len(texts)

    rows = await log_rows(harness)
    assert len(rows) == 2
    for row in rows:
        assert row["door"] == "openai"
        assert (row["requested_model"], row["served_model"], row["provider"]) == (
            EMBED_MODEL,
            EMBED_MODEL,
            "onnx-embed",
        )
        assert row["status"] == "ok"
        assert row["prompt_tokens"] == floats.usage.prompt_tokens
        assert row["completion_tokens"] == 0
        assert row["prompt"] == "\n".join(texts)  # what was embedded is in the log


async def test_openai_models_list(harness: Harness) -> None:
    async with openai_client(harness) as client:
        ids = [model.id async for model in client.models.list()]
    assert {CHAT_MODEL, EMBED_MODEL, *SEED_ALIASES} <= set(ids)


# --- the REST door ----------------------------------------------------------------------------------


async def test_rest_code_extracts_the_blocks_in_the_answer(harness: Harness) -> None:
    response = await harness.client.post(
        "/api/v1/ai/code",
        headers=ADMIN,
        json={
            "task": "Write a Python function add(a, b) that returns a + b.",
            "language": "python",
            "max_tokens": 32,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    text = data["response"]
    assert data["language"] == "python"
    # Checked against the text itself: a block for each closed fence, each one's code verbatim in
    # the answer; no closed fence, no block (the small model does not always write one).
    closed_fences = text.count("```") // 2
    assert len(data["code_blocks"]) == closed_fences
    for block in data["code_blocks"]:
        assert set(block) == {"language", "code"}
        assert block["code"]
        assert block["code"] in text
        assert f"```{block['language'] or ''}" in text
    if closed_fences == 0:
        assert data["code_blocks"] == []

    row = await only_row(harness)
    assert_row_matches(
        row, door="rest", prompt_tokens=data["prompt_tokens"], completion_tokens=data["completion_tokens"]
    )
    assert row["messages"][0]["role"] == "system"
    assert "python" in row["messages"][0]["content"]


def test_extract_code_blocks() -> None:
    text = (
        "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n"
        "and a shell line:\n```   \necho hi\n```\n"
        "and C++:\n```c++\nint main() {}\n```\n"
        "then an unfinished one:\n```js\nconsole.log("
    )
    assert extract_code_blocks(text) == [
        {"language": "python", "code": "def add(a, b):\n    return a + b"},
        {"language": None, "code": "echo hi"},
        {"language": "c++", "code": "int main() {}"},
    ]
    assert extract_code_blocks("no code here, just `inline` ticks") == []
    assert extract_code_blocks("```python\nprint(1)") == []  # cut off by max_tokens: not a block
    assert extract_code_blocks("```\n\n```") == [{"language": None, "code": ""}]


async def analyze(h: Harness, **body: Any) -> httpx.Response:
    return await h.client.post("/api/v1/ai/analyze", headers=ADMIN, json={"temperature": 0, **body})


async def test_rest_analyze_every_type(harness: Harness) -> None:
    sentiment = await analyze(
        harness, content="I love this product, it works great!", analysis_type="sentiment", max_tokens=32
    )
    assert sentiment.status_code == 200, sentiment.text
    result = sentiment.json()["data"]["result"]
    assert result["sentiment"] in ("positive", "negative", "neutral", "mixed")

    labels = ["finance", "sports", "weather"]
    classification = await analyze(
        harness,
        content="The stock market fell 3% today.",
        analysis_type="classification",
        labels=labels,
        max_tokens=32,
    )
    assert classification.status_code == 200, classification.text
    assert classification.json()["data"]["result"]["label"] in labels

    extraction = await analyze(
        harness,
        content="Alice is 30 years old and lives in Paris.",
        analysis_type="extraction",
        schema=PERSON_SCHEMA,
        max_tokens=32,
    )
    assert extraction.status_code == 200, extraction.text
    extracted = extraction.json()["data"]["result"]
    jsonschema.validate(extracted, PERSON_SCHEMA)

    summary = await analyze(
        harness,
        content="The cat sat on the mat all afternoon, then went to sleep.",
        analysis_type="summary",
        max_tokens=64,
    )
    assert summary.status_code == 200, summary.text
    assert summary.json()["data"]["result"]["summary"].strip()

    responses = [sentiment, classification, extraction, summary]
    for response in responses:
        data = response.json()["data"]
        assert data["finish_reason"] == "stop"
        assert json.loads(data["response"]) == data["result"]
    rows = await log_rows(harness, door="rest")
    assert len(rows) == 4
    for response in responses:
        data = response.json()["data"]
        row = row_for(rows, response.json()["request_id"])
        assert_row_matches(
            row, door="rest", prompt_tokens=data["prompt_tokens"], completion_tokens=data["completion_tokens"]
        )
        assert row["response"] == data["response"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"analysis_type": "classification"}, "labels"),
        ({"analysis_type": "classification", "labels": []}, "labels"),
        ({"analysis_type": "extraction"}, "schema"),
        ({"analysis_type": "extraction", "schema": {"type": "no-such-type"}}, "schema"),
        ({"analysis_type": "extraction", "schema": {"properties": {"a": {"minLength": -1}}}}, "schema"),
    ],
)
async def test_rest_analyze_refuses_incomplete_requests(harness: Harness, body: dict[str, Any], field: str) -> None:
    response = await analyze(harness, content="Some text.", **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [f["field"] for f in error["details"]["fields"]] == [field]
    assert await log_rows(harness) == []  # refused before any model call


async def test_rest_models_are_healthy(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/ai/models", headers=ADMIN)
    assert response.status_code == 200, response.text
    models = {m["name"]: m for m in response.json()["data"]}
    assert set(models) == {CHAT_MODEL, EMBED_MODEL, "bge-small-en"}
    assert models[CHAT_MODEL]["provider"] == "llamacpp"
    assert set(models[CHAT_MODEL]["aliases"]) == set(SEED_ALIASES)
    assert models[EMBED_MODEL]["provider"] == "onnx-embed"
    assert models[EMBED_MODEL]["capabilities"] == ["embed"]
    assert models["bge-small-en"]["capabilities"] == ["embed"]
    for model in models.values():
        assert model["healthy"] is True
        assert model["breaker"] == "closed"


# --- the episodic log: caching, ownership --------------------------------------------------------------


async def test_cached_call_is_logged_as_cached_and_free(harness: Harness) -> None:
    body = {"prompt": "Name a fruit.", "max_tokens": 8, "temperature": 0}
    first_envelope = (await harness.client.post("/api/v1/ai/generate", headers=ADMIN, json=body)).json()
    second_envelope = (await harness.client.post("/api/v1/ai/generate", headers=ADMIN, json=body)).json()
    first, second = first_envelope["data"], second_envelope["data"]
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["response"] == first["response"]
    assert (second["prompt_tokens"], second["completion_tokens"]) == (
        first["prompt_tokens"],
        first["completion_tokens"],
    )

    rows = await log_rows(harness)
    assert len(rows) == 2
    oldest, newest = (row_for(rows, e["request_id"]) for e in (first_envelope, second_envelope))
    for row, data in ((oldest, first), (newest, second)):
        assert_row_matches(
            row, door="rest", prompt_tokens=data["prompt_tokens"], completion_tokens=data["completion_tokens"]
        )
        assert row["response"] == data["response"]
    assert (oldest["cached"], newest["cached"]) == (False, True)
    assert newest["cost"] == 0
    assert newest["attempts"] == 0  # no provider was called
    assert await metric(harness, "trellis_gateway_cache_total", result="hit_l1") == 1


async def test_other_users_do_not_see_my_calls(harness: Harness) -> None:
    mine = await harness.client.post(
        "/api/v1/ai/generate", headers=ADMIN, json={"prompt": "Say yes.", "max_tokens": 8, "temperature": 0}
    )
    assert mine.status_code == 200, mine.text
    [my_row] = await log_rows(harness)

    _, their_key = await harness.user_with_key("someone-else")
    assert await log_rows(harness, key=their_key) == []
    hidden = await harness.client.get(f"/api/v1/db/logs/{my_row['id']}", headers=Harness.auth(their_key))
    assert hidden.status_code == 404

    # Their own call is theirs alone, and not served from my cache entry.
    theirs = await harness.client.post(
        "/api/v1/ai/generate",
        headers=Harness.auth(their_key),
        json={"prompt": "Say yes.", "max_tokens": 8, "temperature": 0},
    )
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["data"]["cached"] is False
    [their_row] = await log_rows(harness, key=their_key)
    assert their_row["id"] != my_row["id"]
    assert [r["id"] for r in await log_rows(harness, key=their_key)] == [their_row["id"]]


# --- cancellation: a client that goes away stops the model ------------------------------------------------


@asynccontextmanager
async def real_server(h: Harness) -> AsyncIterator[str]:
    """The harness's app behind a real uvicorn socket (ASGITransport cannot deliver a disconnect)."""
    async with serve(h.app) as url:
        yield url


async def test_client_disconnect_cancels_the_generation(harness: Harness) -> None:
    async with real_server(harness) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with client.stream(
            "POST",
            "/api/v1/ai/generate",
            headers=ADMIN,
            json={
                "prompt": "Write a very long story about a dragon.",
                "max_tokens": 400,
                "temperature": 0,
                "stream": True,
            },
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            assert await anext(lines) == "event: delta"
            first = json.loads((await anext(lines)).removeprefix("data: "))
            assert first["text"]
        # Leaving the block closed the connection with the answer unfinished.

        deadline = time.monotonic() + 15
        while not (rows := await log_rows(harness, status="cancelled")):
            assert time.monotonic() < deadline, await log_rows(harness)
            await asyncio.sleep(0.05)
        [row] = rows
        assert row["door"] == "rest"
        assert row["served_model"] == CHAT_MODEL
        assert row["finish_reason"] == "cancelled"
        assert row["error"]
        assert 1 <= row["completion_tokens"] < 100  # far below the 400 asked for
        assert row["prompt_tokens"] > 10  # the prompt was processed, and counted, before the cut
        assert row["response"].startswith(first["text"])

        # The worker thread stopped too: its llama.cpp instance went back to the pool with only a
        # few tokens generated past the prompt (a worker that ran on would hold about 400).
        gateway = harness.runtime.gateway
        _, model = gateway.resolve(CHAT_MODEL)
        pool = gateway.provider_for(model)._pools[model_path(model)]  # type: ignore[attr-defined]
        while not pool.idle:
            assert time.monotonic() < deadline, "the generation never stopped"
            await asyncio.sleep(0.02)
        prompt = await prompt_tokens_of(harness, [Message("user", "Write a very long story about a dragon.")])
        generated = pool.idle[0].n_tokens - prompt
        assert row["completion_tokens"] - 1 <= generated < 100

        # And the model serves the next request.
        after = await client.post(
            "/api/v1/ai/generate", headers=ADMIN, json={"prompt": "Say hi.", "max_tokens": 8, "temperature": 0}
        )
        assert after.status_code == 200, after.text
        assert after.json()["data"]["response"].strip()
    rows = await log_rows(harness)
    assert sorted(r["status"] for r in rows) == ["cancelled", "ok"]
    assert row_for(rows, after.json()["request_id"])["status"] == "ok"


# --- metrics ------------------------------------------------------------------------------------------


async def test_metrics_count_calls_tokens_first_tokens_and_cache_hits(harness: Harness) -> None:
    body = {"prompt": "Name an animal.", "max_tokens": 8, "temperature": 0}
    plain = (await harness.client.post("/api/v1/ai/generate", headers=ADMIN, json=body)).json()["data"]
    await harness.client.post("/api/v1/ai/generate", headers=ADMIN, json=body)  # cached
    streamed = await harness.client.post("/api/v1/ai/generate", headers=ADMIN, json={**body, "stream": True})
    done = sse_events(streamed.text)[-1]
    assert done[0] == "done"
    async with openai_client(harness) as client:
        await client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0
        )

    requests = "trellis_gateway_requests_total"
    labels = {"model": CHAT_MODEL, "provider": "llamacpp", "status": "ok"}
    assert await metric(harness, requests, door="rest", **labels) == 3
    assert await metric(harness, requests, door="openai", **labels) == 1
    assert await metric(harness, "trellis_gateway_cache_total", result="hit_l1") == 1
    # Tokens are counted for calls a model ran, not for cache hits.
    rows = [r for r in await log_rows(harness) if not r["cached"]]
    assert len(rows) == 3
    tokens = "trellis_gateway_tokens_total"
    assert await metric(harness, tokens, model=CHAT_MODEL, kind="prompt") == sum(r["prompt_tokens"] for r in rows)
    assert await metric(harness, tokens, model=CHAT_MODEL, kind="completion") == sum(
        r["completion_tokens"] for r in rows
    )
    assert plain["completion_tokens"] + done[1]["completion_tokens"] <= 16
    # Time to first token is observed for the streamed call only.
    ttft = "trellis_gateway_time_to_first_token_seconds_count"
    assert await metric(harness, ttft, model=CHAT_MODEL, provider="llamacpp") == 1
