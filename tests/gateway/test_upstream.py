"""The gateway against a real HTTP upstream that imitates an OpenAI-compatible server and fails on cue.

``tests/gateway/upstream.py`` serves the fake over real sockets; the gateway's own httpx client talks
to it, so timeouts, dropped connections and malformed bodies are real. The gateway's backoff
``sleep`` is a recorder and its jitter is 1.0: each wait is asserted exactly, none is waited.
The breaker's recovery period passes on the harness's ManualClock.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import select

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, REDIS_URL, Harness
from tests.gateway.upstream import Cut, FakeUpstream, Garbage, Ok, Slow, Status, WrongShape
from trellis.episodic.models import EpisodicLog
from trellis.settings.gateway import SEED_ALIASES

ADMIN = Harness.auth(ADMIN_KEY)
GENERATE = "/api/v1/ai/generate"
CHAT = "/api/v1/ai/chat"
MODELS = "/api/v1/ai/models"


# --- fixtures ------------------------------------------------------------------------------------


class Waits:
    """The gateway's injected ``sleep``: records each backoff wait and returns at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def model(upstream: FakeUpstream, model_id: str = "fake-model", **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": upstream.base_url,
        "model_id": model_id,
        "api_key": "sk-test",
        "connect_timeout_seconds": 0.5,
        "read_timeout_seconds": 0.5,
        "context_window": 4096,
        "max_output_tokens": 512,
        **extra,
    }


@dataclass
class Env:
    h: Harness
    up: FakeUpstream
    backup: FakeUpstream
    waits: Waits = field(default_factory=Waits)

    async def post(self, path: str, body: dict[str, Any], key: str = ADMIN_KEY) -> httpx.Response:
        return await self.h.client.post(path, headers=Harness.auth(key), json=body)

    async def generate(self, prompt: str = "Say hello.", key: str = ADMIN_KEY, **body: Any) -> httpx.Response:
        return await self.post(GENERATE, {"model": "up", "prompt": prompt, **body}, key)

    async def models(self) -> dict[str, dict[str, Any]]:
        rows = assert_ok(await self.h.client.get(MODELS, headers=ADMIN))
        return {row["name"]: row for row in rows}

    async def metric(self, name: str, **labels: str) -> float:
        response = await self.h.client.get("/metrics")
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    primary = FakeUpstream(("fake-model", "solo-model", "fake-embed")).start()
    backup = FakeUpstream(("backup-model",)).start()
    yield primary, backup
    primary.stop()
    backup.stop()


@pytest.fixture
def open_gateway(make_harness: Callable[..., Any], servers: tuple[FakeUpstream, FakeUpstream]) -> Callable[..., Any]:
    """``async with open_gateway(models={...}, gateway={...}, **settings) as env:``.

    Models: ``up`` (falls back to ``backup``, on a second server), ``solo`` (no fallback), ``tiny``
    (a 64-token context window) and ``embedder``; ``up``, ``solo``, ``tiny`` and ``embedder`` share
    the primary server and so one circuit breaker.
    """
    up, backup = servers
    up.reset()
    backup.reset()

    @asynccontextmanager
    async def factory(
        *, models: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None, **settings: Any
    ) -> AsyncIterator[Env]:
        configured = {
            "up": model(up, fallbacks=["backup"]),
            "backup": model(backup, "backup-model"),
            "solo": model(up, "solo-model"),
            "tiny": model(up, "tiny-model", context_window=64, max_output_tokens=32),
            "embedder": model(up, "fake-embed", capabilities=["embed"], max_output_tokens=1),
            **(models or {}),
        }
        env = Env(h=None, up=up, backup=backup)  # type: ignore[arg-type]
        async with make_harness(
            models=configured, gateway=gateway or {}, sleep=env.waits, jitter=lambda: 1.0, **settings
        ) as h:
            env.h = h
            yield env

    return factory


@pytest.fixture
async def env(open_gateway: Callable[..., Any]) -> AsyncIterator[Env]:
    async with open_gateway() as e:
        yield e


@asynccontextmanager
async def sdk(h: Harness, api_key: str = ADMIN_KEY) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI SDK pointed at the app (in process), with its own retries off."""
    transport = httpx.ASGITransport(app=h.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trellis.test") as http:
        yield openai.AsyncOpenAI(base_url="http://trellis.test/v1", api_key=api_key, http_client=http, max_retries=0)


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) for each event of a REST stream."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# --- the fake itself ---------------------------------------------------------------------------------


async def test_the_fake_speaks_openai_to_the_official_sdk(servers: tuple[FakeUpstream, FakeUpstream]) -> None:
    """What the gateway is tested against is what OpenAI clients accept."""
    up, _ = servers
    up.reset()
    async with httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=up.base_url, api_key="sk-direct", http_client=http, max_retries=0)
        assert [m.id async for m in client.models.list()] == ["fake-model", "solo-model", "fake-embed"]
        completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
        assert completion.choices[0].message.content == Ok().text
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == Ok().text
        assert chunks[-1].usage is not None
        embeddings = await client.embeddings.create(model="e", input=["ab"], encoding_format="float")
        assert embeddings.data[0].embedding == [2.0, 0.0, 0.5]
        up.chat(Status(429, "busy", retry_after="3"))
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
        assert limited.value.response.headers["retry-after"] == "3"
    assert [r.path for r in up.calls()] == [
        "/v1/models",
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/chat/completions",
    ]
    assert up.calls()[0].headers["authorization"] == "Bearer sk-direct"


# --- success: the upstream's answer, and what it was sent -----------------------------------------


async def test_generate_returns_upstream_text_and_forwards_parameters(env: Env) -> None:
    env.up.chat(Ok("Four.", prompt_tokens=12, completion_tokens=3))
    data = assert_ok(await env.generate("What is 2+2?", max_tokens=40, temperature=0.3))
    assert data["response"] == "Four."
    assert (data["prompt_tokens"], data["completion_tokens"], data["tokens_used"]) == (12, 3, 15)
    assert data["provider"] == "openai"
    assert data["model"] == data["requested_model"] == "up"
    assert data["cached"] is False
    assert data["fallback_from"] is None
    assert data["finish_reason"] == "stop"

    [call] = env.up.calls("chat")
    assert call.headers["authorization"] == "Bearer sk-test"
    assert call.body["model"] == "fake-model"
    assert call.body["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert call.body["max_tokens"] == 40
    assert call.body["temperature"] == 0.3
    assert "stream" not in call.body
    assert env.backup.calls() == []
    assert env.waits.seconds == []


async def test_chat_forwards_messages_defaults_stop_and_seed(env: Env) -> None:
    env.up.chat(Ok("It was cut", prompt_tokens=30, completion_tokens=256, finish_reason="length"))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a story."},
    ]
    data = assert_ok(await env.post(CHAT, {"model": "up", "messages": messages, "stop": "END", "seed": 7}))
    assert data["response"] == "It was cut"
    assert data["finish_reason"] == "length"
    assert (data["prompt_tokens"], data["completion_tokens"]) == (30, 256)

    [call] = env.up.calls("chat")
    assert call.body["messages"] == messages
    # The model's defaults fill what the caller left out.
    assert call.body["max_tokens"] == 256
    assert call.body["temperature"] == 0.7
    assert call.body["stop"] == ["END"]
    assert call.body["seed"] == 7


async def test_analyze_sends_the_schema_as_response_format(env: Env) -> None:
    env.up.chat(Ok('{"sentiment": "positive", "confidence": 0.9}'))
    data = assert_ok(
        await env.post("/api/v1/ai/analyze", {"model": "up", "content": "I love it", "analysis_type": "sentiment"})
    )
    assert data["result"] == {"sentiment": "positive", "confidence": 0.9}
    [call] = env.up.calls("chat")
    response_format = call.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["required"] == ["sentiment"]


# --- retries ----------------------------------------------------------------------------------------


async def test_503_twice_then_ok_is_retried_with_backoff(env: Env) -> None:
    env.up.chat(Status(503), Status(503), Ok("third time lucky"))
    data = assert_ok(await env.generate())
    assert data["response"] == "third time lucky"
    assert data["model"] == "up"
    assert len(env.up.calls("chat")) == 3
    assert env.backup.calls() == []
    # backoff_initial 0.25, doubling, full jitter drawn as 1.0.
    assert env.waits.seconds == [0.25, 0.5]
    assert await env.metric("trellis_gateway_retries_total", provider="openai") == 2


async def test_429_with_retry_after_waits_exactly_that(env: Env) -> None:
    env.up.chat(Status(429, "slow down", retry_after="2"), Ok("now then"))
    assert assert_ok(await env.generate())["response"] == "now then"
    assert env.waits.seconds == [2.0]
    assert len(env.up.calls("chat")) == 2


async def test_400_from_upstream_is_the_callers_fault_and_not_retried(env: Env) -> None:
    env.up.chat(Status(400, "max_tokens is too large for fake-model"))
    error = assert_error(await env.generate(), 400, "validation_error")
    assert "max_tokens is too large for fake-model" in error["message"]
    assert error["details"]["upstream_status"] == 400
    assert len(env.up.calls("chat")) == 1
    assert env.backup.calls() == []  # the request, not the endpoint, was wrong: no fallback either
    assert env.waits.seconds == []


async def test_401_from_upstream_tries_the_fallback(env: Env) -> None:
    env.up.chat(Status(401, "invalid api key"))
    data = assert_ok(await env.generate())
    assert data["model"] == "backup"
    assert data["fallback_from"] == "up"
    assert len(env.up.calls("chat")) == 1  # credentials do not get better by retrying
    [call] = env.backup.calls("chat")
    assert call.body["model"] == "backup-model"
    assert env.waits.seconds == []


async def test_401_on_a_stream_tries_the_fallback_too(env: Env) -> None:
    env.up.chat(Status(401, "invalid api key"))
    env.backup.chat(Ok("from the backup"))
    response = await env.post(CHAT, {"model": "up", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    assert response.status_code == 200
    events = sse(response.text)
    assert events[-1][0] == "done", events
    assert events[-1][1]["response"] == "from the backup"
    assert events[-1][1]["model"] == "backup"
    assert events[-1][1]["fallback_from"] == "up"


# --- the circuit breaker -------------------------------------------------------------------------


async def test_breaker_opens_refuses_without_calling_and_recovers(open_gateway: Callable[..., Any]) -> None:
    tuning = {"breaker_failure_threshold": 2, "max_attempts": 1, "breaker_recovery_seconds": 30}
    async with open_gateway(gateway=tuning) as env:
        env.up.chat(Status(503), Status(503))
        for _ in range(2):
            assert_error(await env.generate(model="solo"), 503, "unavailable_error")
        assert len(env.up.calls("chat")) == 2
        models = await env.models()
        assert models["solo"]["breaker"] == "open"
        assert models["solo"]["healthy"] is False
        assert models["backup"]["breaker"] == "closed"  # another endpoint, another breaker

        refused = await env.generate(model="solo")
        error = assert_error(refused, 503, "unavailable_error")
        assert refused.headers["retry-after"] == "30"
        assert "Circuit open" in " ".join(error["details"]["reasons"])
        assert len(env.up.calls("chat")) == 2  # never reached the upstream

        env.h.clock.advance(31)
        assert (await env.models())["solo"]["breaker"] == "half_open"
        data = assert_ok(await env.generate(model="solo"))  # the probe, answered by the default Ok
        assert data["response"] == Ok().text
        assert len(env.up.calls("chat")) == 3
        models = await env.models()
        assert models["solo"]["breaker"] == "closed"
        assert models["solo"]["healthy"] is True


async def test_open_breaker_fails_over_to_the_fallback(open_gateway: Callable[..., Any]) -> None:
    tuning = {"breaker_failure_threshold": 1, "max_attempts": 1}
    async with open_gateway(gateway=tuning) as env:
        env.up.chat(Status(500))
        assert assert_ok(await env.generate())["model"] == "backup"  # trips the primary's breaker
        assert assert_ok(await env.generate())["model"] == "backup"
        assert len(env.up.calls("chat")) == 1
        assert len(env.backup.calls("chat")) == 2


# --- fallback and exhaustion ------------------------------------------------------------------------


async def test_fallback_serves_when_the_primary_is_unavailable(env: Env) -> None:
    env.up.chat(Status(503), Status(503), Status(503))
    env.backup.chat(Ok("backup speaking", prompt_tokens=4, completion_tokens=2))
    data = assert_ok(await env.generate())
    assert data["response"] == "backup speaking"
    assert data["model"] == "backup"
    assert data["requested_model"] == "up"
    assert data["fallback_from"] == "up"
    assert data["tokens_used"] == 6
    assert len(env.up.calls("chat")) == 3
    [call] = env.backup.calls("chat")
    assert call.body["model"] == "backup-model"
    assert call.headers["authorization"] == "Bearer sk-test"
    assert env.waits.seconds == [0.25, 0.5]
    assert await env.metric("trellis_gateway_fallbacks_total", requested="up", served="backup") == 1


async def test_nothing_can_serve_is_503_with_retry_after(env: Env) -> None:
    env.up.chat(Status(503), Status(503), Status(503))
    env.backup.chat(*[Status(429, "rate limited", retry_after="5")] * 3)
    response = await env.generate()
    error = assert_error(response, 503, "unavailable_error")
    assert response.headers["retry-after"] == "5"
    assert error["details"]["model"] == "up"
    assert len(error["details"]["reasons"]) == 2
    assert env.waits.seconds == [0.25, 0.5, 5.0, 5.0]
    assert len(env.up.calls("chat")) == len(env.backup.calls("chat")) == 3


async def test_retry_after_longer_than_allowed_fails_over_at_once(env: Env) -> None:
    env.up.chat(Status(429, "come back in a minute", retry_after="60"))
    assert assert_ok(await env.generate())["model"] == "backup"
    assert env.waits.seconds == []
    assert len(env.up.calls("chat")) == 1


async def test_upstream_down_is_503(open_gateway: Callable[..., Any], servers: tuple[FakeUpstream, ...]) -> None:
    dead = {"base_url": "http://127.0.0.1:9/v1", "provider": "openai", "model_id": "x"}  # discard port: refused
    async with open_gateway(models={"dead": dead}) as env:
        response = await env.generate(model="dead")
        assert_error(response, 503, "unavailable_error")
        assert response.headers["retry-after"] == "1"
        assert env.waits.seconds == [0.25, 0.5]


# --- timeouts and garbage --------------------------------------------------------------------------


async def test_slow_upstream_times_out_is_retried_then_503(
    open_gateway: Callable[..., Any], servers: tuple[FakeUpstream, FakeUpstream]
) -> None:
    quick = model(servers[0], "solo-model", read_timeout_seconds=0.2)
    async with open_gateway(models={"solo": quick}) as env:
        env.up.chat(Slow(3), Slow(3), Slow(3))
        started = time.monotonic()
        response = await env.generate(model="solo")
        elapsed = time.monotonic() - started
        error = assert_error(response, 503, "unavailable_error")
        assert "timed out" in " ".join(error["details"]["reasons"])
        calls = env.up.calls("chat")
        assert len(calls) == 3
        # Each attempt waited for the read timeout (the server really was slow), and no longer.
        assert all(later.at - earlier.at >= 0.19 for earlier, later in pairwise(calls))
        assert elapsed < 1.5
        assert env.waits.seconds == [0.25, 0.5]


async def test_slow_once_then_fast_succeeds(
    open_gateway: Callable[..., Any], servers: tuple[FakeUpstream, FakeUpstream]
) -> None:
    quick = model(servers[0], "solo-model", read_timeout_seconds=0.2)
    async with open_gateway(models={"solo": quick}) as env:
        env.up.chat(Slow(3), Ok("made it"))
        assert assert_ok(await env.generate(model="solo"))["response"] == "made it"
        env.up.chat(Slow(3), Ok("streamed anyway"))
        response = await env.post(
            CHAT, {"model": "solo", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        )
        assert sse(response.text)[-1][1]["response"] == "streamed anyway"
        assert len(env.up.calls("chat")) == 4
        assert env.waits.seconds == [0.25, 0.25]


async def test_garbage_is_502(env: Env) -> None:
    env.up.chat(Garbage())
    error = assert_error(await env.generate(model="solo"), 502, "upstream_error")
    assert "not a valid response" in error["message"]
    assert "invalid JSON" in " ".join(error["details"]["reasons"])
    assert len(env.up.calls("chat")) == 1  # a garbage answer is not retried
    assert env.waits.seconds == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"unexpected": True}, "not a chat completion"),
        ({"choices": []}, "not a chat completion"),
        ({"choices": [{"message": {"content": None}}], "usage": {}}, "no text content"),
        ({"choices": [{"message": {"content": "hi"}}]}, "no usage object"),
        ({"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "3"}}, "not a pair of integers"),
        ([1, 2, 3], "not a chat completion"),
    ],
)
async def test_wrong_shape_is_502(env: Env, payload: Any, reason: str) -> None:
    env.up.chat(WrongShape(payload))
    error = assert_error(await env.generate(model="solo"), 502, "upstream_error")
    assert reason in " ".join(error["details"]["reasons"])
    assert len(env.up.calls("chat")) == 1


async def test_garbage_from_the_primary_fails_over(env: Env) -> None:
    env.up.chat(Garbage("<html>bad gateway</html>"))
    assert assert_ok(await env.generate())["model"] == "backup"


async def test_error_body_that_is_not_json_still_classifies(env: Env) -> None:
    env.up.chat(Status(502, body="<html>nginx bad gateway</html>"), Ok("fine"))
    assert assert_ok(await env.generate())["response"] == "fine"
    env.up.chat(Status(422, body="plain words"))
    error = assert_error(await env.generate(), 400, "validation_error")
    assert "plain words" in error["message"]


# --- streams ---------------------------------------------------------------------------------------


async def test_rest_stream_relays_the_upstream_stream(env: Env) -> None:
    env.up.chat(Ok("Hello there friend", prompt_tokens=9, completion_tokens=3))
    response = await env.post(
        CHAT, {"model": "up", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 30}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.text)
    names = [name for name, _ in events]
    assert names == ["delta", "delta", "delta", "done"]
    done = events[-1][1]
    assert done["response"] == "".join(data["text"] for _, data in events[:-1]) == "Hello there friend"
    assert (done["prompt_tokens"], done["completion_tokens"]) == (9, 3)
    assert done["provider"] == "openai"
    [call] = env.up.calls("chat")
    assert call.body["stream"] is True
    assert call.body["stream_options"] == {"include_usage": True}
    assert call.body["max_tokens"] == 30


async def test_rest_stream_retries_before_the_first_chunk(env: Env) -> None:
    env.up.chat(Status(503), Ok("second try"))
    response = await env.post(CHAT, {"model": "up", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    events = sse(response.text)
    assert events[-1][0] == "done"
    assert events[-1][1]["response"] == "second try"
    assert env.waits.seconds == [0.25]


@pytest.mark.parametrize("abrupt", [True, False], ids=["connection-dropped", "ended-without-done"])
async def test_rest_stream_cut_midway_ends_with_an_error_event(env: Env, abrupt: bool) -> None:
    env.up.chat(Cut(chunks=2, abrupt=abrupt))
    response = await env.post(CHAT, {"model": "up", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    assert response.status_code == 200
    events = sse(response.text)
    names = [name for name, _ in events]
    assert names == ["delta", "delta", "error"], events
    assert "done" not in names
    assert "".join(data["text"] for name, data in events if name == "delta") == "part0 part1 "
    assert events[-1][1]["code"] == "upstream_error"
    # Text had already been sent: no retry, no fallback (that would splice two answers).
    assert len(env.up.calls("chat")) == 1
    assert env.backup.calls() == []


async def test_rest_stream_with_nothing_to_serve_ends_with_an_error_event(env: Env) -> None:
    env.up.chat(*[Status(503)] * 3)
    env.backup.chat(*[Status(503)] * 3)
    response = await env.post(CHAT, {"model": "up", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    events = sse(response.text)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["code"] == "unavailable_error"


async def test_sdk_stream_cut_midway_raises(env: Env) -> None:
    env.up.chat(Cut(chunks=2))
    received: list[str] = []
    async with sdk(env.h) as client:
        stream = await client.chat.completions.create(
            model="up", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="stream"):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert "".join(received) == "part0 part1 "


# --- the OpenAI-compatible door, with the official SDK --------------------------------------------


async def test_sdk_models_list(env: Env) -> None:
    async with sdk(env.h) as client:
        ids = {m.id async for m in client.models.list()}
    assert {"up", "backup", "solo", "tiny", "embedder"} <= ids
    assert set(SEED_ALIASES) <= ids


async def test_sdk_chat_completion(env: Env) -> None:
    env.up.chat(Ok('{"capital": "Paris"}', prompt_tokens=14, completion_tokens=2))
    async with sdk(env.h) as client:
        completion = await client.chat.completions.create(
            model="up",
            messages=[{"role": "developer", "content": "Answer in one word."}, {"role": "user", "content": "Capital?"}],
            max_tokens=20,
            temperature=0.1,
            response_format={"type": "json_object"},
        )
    assert completion.choices[0].message.content == '{"capital": "Paris"}'
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "up"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 2)
    [call] = env.up.calls("chat")
    assert call.body["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert call.body["max_tokens"] == 20
    assert call.body["temperature"] == 0.1
    assert call.body["response_format"] == {"type": "json_object"}


async def test_sdk_chat_completion_json_schema_is_forwarded(env: Env) -> None:
    env.up.chat(Ok('{"n": 4}'))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    async with sdk(env.h) as client:
        completion = await client.chat.completions.create(
            model="up",
            messages=[{"role": "user", "content": "2+2 as JSON"}],
            max_completion_tokens=12,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        )
    assert json.loads(completion.choices[0].message.content or "") == {"n": 4}
    [call] = env.up.calls("chat")
    assert call.body["max_tokens"] == 12
    assert call.body["response_format"]["json_schema"]["schema"] == schema


async def test_sdk_chat_completion_stream(env: Env) -> None:
    env.up.chat(Ok("one two three", prompt_tokens=5, completion_tokens=3))
    async with sdk(env.h) as client:
        stream = await client.chat.completions.create(
            model="up",
            messages=[{"role": "user", "content": "Count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)


async def test_sdk_text_completion(env: Env) -> None:
    env.up.chat(Ok("a rose", prompt_tokens=3, completion_tokens=2))
    async with sdk(env.h) as client:
        completion = await client.completions.create(model="up", prompt="A rose is", max_tokens=5)
    assert completion.choices[0].text == "a rose"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 5
    [call] = env.up.calls("chat")
    assert call.body["messages"] == [{"role": "user", "content": "A rose is"}]
    assert call.body["max_tokens"] == 5


async def test_sdk_embeddings(env: Env) -> None:
    async with sdk(env.h) as client:
        # The SDK asks for base64 unless told otherwise; both must work.
        default = await client.embeddings.create(model="embedder", input=["a b", "cdef"])
        floats = await client.embeddings.create(model="embedder", input="xyz", encoding_format="float")
    assert [d.embedding for d in default.data] == [[3.0, 0.0, 0.5], [4.0, 1.0, 0.5]]
    assert default.model == "embedder"
    assert default.usage.prompt_tokens == 3
    assert floats.data[0].embedding == [3.0, 0.0, 0.5]
    first, second = env.up.calls("embeddings")
    assert first.body == {"model": "fake-embed", "input": ["a b", "cdef"]}
    assert second.body == {"model": "fake-embed", "input": ["xyz"]}
    assert first.headers["authorization"] == "Bearer sk-test"


async def test_sdk_errors_are_the_sdks_exceptions(env: Env) -> None:
    async with sdk(env.h) as client:
        with pytest.raises(openai.NotFoundError, match="nope"):
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="up", messages=[{"role": "user", "content": "Hi"}], temperature=5
            )
        assert isinstance(bad.value.body, dict)
        assert bad.value.body["param"] == "temperature"
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="up", input="chat models do not embed")
    async with sdk(env.h, api_key="trl_not-a-real-key-0123456789abcdefghijklmnop") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    async with sdk(env.h) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list(extra_headers={"Authorization": openai.omit})
    assert env.up.calls("chat") == []


async def test_sdk_sees_upstream_failures_as_api_errors(env: Env) -> None:
    env.up.chat(*[Status(503)] * 3)
    env.backup.chat(*[Status(503)] * 3)
    async with sdk(env.h) as client:
        with pytest.raises(openai.InternalServerError) as unavailable:
            await client.chat.completions.create(model="up", messages=[{"role": "user", "content": "Hi"}])
        assert unavailable.value.status_code == 503
        assert unavailable.value.response.headers["retry-after"] == "1"
        env.up.chat(Garbage())
        with pytest.raises(openai.InternalServerError) as bad:
            await client.chat.completions.create(model="solo", messages=[{"role": "user", "content": "Hi"}])
        assert bad.value.status_code == 502


# --- validation and unknown models ------------------------------------------------------------------


async def test_unknown_model_is_404_listing_the_available(env: Env) -> None:
    error = assert_error(await env.generate(model="gpt-9000"), 404, "not_found_error")
    assert "gpt-9000" in error["message"]
    available = error["details"]["available"]
    assert {"up", "backup", "solo", *SEED_ALIASES} <= set(available)
    assert env.up.calls() == []


USER = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("path", "body", "name"),
    [
        (GENERATE, {"prompt": ""}, "prompt"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": [{"role": "user", "content": "  "}]}, "messages"),
        (CHAT, {"messages": [{"role": "wizard", "content": "Hi"}]}, "messages.0.role"),
        (GENERATE, {"prompt": "Hi", "max_tokens": 0}, "max_tokens"),
        (GENERATE, {"prompt": "Hi", "max_tokens": 513}, "max_tokens"),
        (CHAT, {"messages": USER, "max_tokens": 100_000}, "max_tokens"),
        (GENERATE, {"prompt": "Hi", "temperature": -1}, "temperature"),
        (CHAT, {"messages": USER, "temperature": 2.5}, "temperature"),
        (GENERATE, {"model": "tiny", "prompt": "word " * 60}, "prompt"),
        (CHAT, {"model": "tiny", "messages": [{"role": "user", "content": "word " * 60}]}, "messages"),
        (GENERATE, {"model": "embedder", "prompt": "Hi"}, "model"),
    ],
)
async def test_invalid_requests_are_400_naming_the_field(env: Env, path: str, body: dict[str, Any], name: str) -> None:
    error = assert_error(await env.post(path, {"model": "up", **body}), 400, "validation_error")
    assert name in field_names(error), error
    assert env.up.calls() == []


async def test_a_prompt_that_fits_the_small_window_goes_through(env: Env) -> None:
    assert_ok(await env.generate("word " * 10, model="tiny", max_tokens=8))
    assert env.up.calls("chat")[0].body["model"] == "tiny-model"


# --- the response cache -----------------------------------------------------------------------------


async def test_deterministic_requests_are_cached(env: Env) -> None:
    env.up.chat(Ok("cached answer"))
    first = assert_ok(await env.generate("same prompt", temperature=0))
    second = assert_ok(await env.generate("same prompt", temperature=0))
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["response"] == "cached answer"
    assert len(env.up.calls("chat")) == 1
    assert await env.metric("trellis_gateway_cache_total", result="hit_l1") == 1

    bypassed = assert_ok(await env.generate("same prompt", temperature=0, cache="bypass"))
    assert bypassed["cached"] is False
    assert len(env.up.calls("chat")) == 2

    # Another prompt, other parameters: another entry.
    assert assert_ok(await env.generate("same prompt", temperature=0, max_tokens=9))["cached"] is False
    assert len(env.up.calls("chat")) == 3


async def test_sampled_requests_are_not_cached_unless_forced(env: Env) -> None:
    for _ in range(2):
        assert assert_ok(await env.generate("creative", temperature=0.7))["cached"] is False
    assert len(env.up.calls("chat")) == 2
    assert assert_ok(await env.generate("creative", temperature=0.7, cache="force"))["cached"] is False
    assert assert_ok(await env.generate("creative", temperature=0.7, cache="force"))["cached"] is True
    assert len(env.up.calls("chat")) == 3


async def test_failures_are_not_cached(env: Env) -> None:
    env.up.chat(Status(400, "no"))
    assert_error(await env.generate("x", temperature=0), 400, "validation_error")
    assert assert_ok(await env.generate("x", temperature=0))["cached"] is False
    assert len(env.up.calls("chat")) == 2


async def test_users_do_not_share_cache_entries(env: Env) -> None:
    _, key = await env.h.user_with_key("bob")
    assert assert_ok(await env.generate("secret plans", temperature=0))["cached"] is False
    assert assert_ok(await env.generate("secret plans", key=key, temperature=0))["cached"] is False
    assert len(env.up.calls("chat")) == 2
    assert assert_ok(await env.generate("secret plans", key=key, temperature=0))["cached"] is True
    assert len(env.up.calls("chat")) == 2


async def test_shared_cache_when_configured(open_gateway: Callable[..., Any]) -> None:
    async with open_gateway(gateway={"cache_shared": True}) as env:
        _, key = await env.h.user_with_key("bob")
        assert assert_ok(await env.generate("public", temperature=0))["cached"] is False
        assert assert_ok(await env.generate("public", key=key, temperature=0))["cached"] is True
        assert len(env.up.calls("chat")) == 1


async def embed_floats(env: Env, texts: list[str], key: str = ADMIN_KEY) -> tuple[list[list[float]], int]:
    async with sdk(env.h, key) as client:
        answer = await client.embeddings.create(model="embedder", input=texts, encoding_format="float")
    return [d.embedding for d in answer.data], answer.usage.prompt_tokens


async def test_repeated_embeddings_are_served_from_the_cache(env: Env) -> None:
    first = await embed_floats(env, ["a b", "cdef"])
    again = await embed_floats(env, ["a b", "cdef"])
    one = await embed_floats(env, ["cdef"])
    assert again == first  # the same vectors and the same usage (3 tokens)
    assert one[0] == first[0][1:]
    assert len(env.up.calls("embeddings")) == 1
    assert await env.metric("trellis_gateway_cache_total", result="hit_l1") == 2  # calls, not texts
    # One text not seen before: the whole call goes to the model, so its usage is what the model did.
    mixed = await embed_floats(env, ["a b", "xyz"])
    assert mixed[0][0] == first[0][0]
    assert env.up.calls("embeddings")[-1].body["input"] == ["a b", "xyz"]
    await env.h.runtime.logs.flush()
    async with env.h.runtime.database.session() as session:
        rows = await session.execute(select(EpisodicLog.prompt, EpisodicLog.cached))
        logged = sorted((str(prompt), bool(cached)) for prompt, cached in rows)
    assert logged == [("a b\ncdef", False), ("a b\ncdef", True), ("a b\nxyz", False), ("cdef", True)]


async def test_users_do_not_share_embedding_cache_entries(env: Env) -> None:
    _, key = await env.h.user_with_key("eve")
    mine = await embed_floats(env, ["private words"])
    theirs = await embed_floats(env, ["private words"], key=key)
    assert theirs == mine
    assert len(env.up.calls("embeddings")) == 2


async def test_embeddings_are_not_cached_when_the_cache_is_off(open_gateway: Callable[..., Any]) -> None:
    async with open_gateway(gateway={"cache_enabled": False}) as env:
        for _ in range(2):
            await embed_floats(env, ["again"])
        assert len(env.up.calls("embeddings")) == 2
        assert await env.metric("trellis_gateway_cache_total", result="bypass") == 2


async def test_l2_embedding_cache_is_shared_between_instances(
    open_gateway: Callable[..., Any], redis_prefix: str, redis_client: Redis
) -> None:
    shared = {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}  # redis_client removes the keys
    async with open_gateway(**shared) as first, open_gateway(**shared) as second:
        computed = await embed_floats(first, ["replicated text"])
        assert await embed_floats(second, ["replicated text"]) == computed
        assert len(first.up.calls("embeddings")) == 1
        assert await second.metric("trellis_gateway_cache_total", result="hit_l2") == 1


async def test_l2_cache_is_shared_between_instances(open_gateway: Callable[..., Any], redis_prefix: str) -> None:
    shared = {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix}
    try:
        async with open_gateway(**shared) as first, open_gateway(**shared) as second:
            first.up.chat(Ok("computed once"))
            assert assert_ok(await first.generate("replicated", temperature=0))["cached"] is False
            answer = assert_ok(await second.generate("replicated", temperature=0))
            assert answer["cached"] is True
            assert answer["response"] == "computed once"
            assert len(first.up.calls("chat")) == 1
            assert await second.metric("trellis_gateway_cache_total", result="hit_l2") == 1
    finally:
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
