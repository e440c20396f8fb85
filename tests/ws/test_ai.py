"""Streaming AI over ``/ws`` on the real local model (SmolLM2 through llama.cpp, as a fresh install
serves it): the REST door's fields and validation, the seed's three events with token deltas and
usage, the episodic log, who may follow a generation, and closing the socket stopping the model."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import ADMIN_KEY, Harness
from tests.ws.conftest import Live, receive, receive_until, request
from trellis.gateway.providers.llamacpp import model_path

CHAT_MODEL = "smollm2-135m"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def log_rows(h: Harness, **params: Any) -> list[dict[str, Any]]:
    await h.runtime.logs.flush()
    response = await h.client.get("/api/v1/db/logs", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]["items"]
    return items


def done(message: dict[str, Any]) -> bool:
    return message["event"] == "ai_generation_complete"


async def test_a_generation_streams_the_seeds_three_events(live: Live) -> None:
    async with live.client() as ws:
        body = {"prompt": "Name a colour.", "max_tokens": 12, "temperature": 0, "model": CHAT_MODEL}
        ack = await request(ws, {"type": "ai.generate", "id": "g1", **body})
        assert (ack["type"], ack["event"]) == ("ack", "ai.generate")
        generation_id, topic = ack["data"]["generation_id"], ack["data"]["topic"]
        assert topic == f"generation:{generation_id}"
        assert ack["topic"] == topic
        messages = await receive_until(ws, done)

    start, *progress, complete = messages
    assert {m["topic"] for m in messages} == {topic}
    assert {m["component"] for m in messages} == {"ai"}
    assert [m["id"] for m in messages] == list(range(1, len(messages) + 1))
    assert (start["type"], start["event"]) == ("update", "ai_generation_start")
    assert start["data"] == {"generation_id": generation_id, "kind": "generate", "model": CHAT_MODEL}
    assert progress
    assert {(m["type"], m["event"]) for m in progress} == {("update", "ai_generation_progress")}
    assert [m["data"]["index"] for m in progress] == list(range(len(progress)))
    assert (complete["type"], complete["event"]) == ("complete", "ai_generation_complete")
    result = complete["data"]
    assert result["response"] == "".join(m["data"]["delta"] for m in progress)
    assert result["model"] == CHAT_MODEL
    assert 0 < result["completion_tokens"] <= 12
    assert result["prompt_tokens"] > 0
    assert result["tokens_used"] == result["prompt_tokens"] + result["completion_tokens"]
    # One call in the episodic log, from the ws door, under the generation's id.
    [row] = [r for r in await log_rows(live.h) if r["request_id"] == generation_id]
    assert (row["door"], row["status"], row["completion_tokens"]) == ("ws", "ok", result["completion_tokens"])


async def test_a_chat_streams_too(live: Live) -> None:
    async with live.client() as ws:
        messages_in = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hi"}]
        ack = await request(ws, {"type": "ai.chat", "id": 1, "messages": messages_in, "max_tokens": 6})
        assert ack["type"] == "ack"
        messages = await receive_until(ws, done)
    assert messages[0]["data"]["kind"] == "chat"
    assert messages[-1]["type"] == "complete"


async def test_generation_requests_are_checked_as_the_rest_door_checks_them(live: Live) -> None:
    bodies: list[dict[str, Any]] = [
        {},
        {"prompt": ""},
        {"prompt": "x", "temperature": 5},
        {"prompt": "x", "max_tokens": "10"},
        {"prompt": "x", "stream": "yes"},
        {"prompt": "x", "surprise": True},
        {"prompt": "x", "model": "no-such-model"},
        {"prompt": "x", "max_tokens": 10_000_000},
    ]
    async with live.client() as ws:
        for n, body in enumerate(bodies):
            rest = await live.h.client.post("/api/v1/ai/generate", json=body, headers=ADMIN)
            answer = await request(ws, {"type": "ai.generate", "id": n, **body})
            assert answer["type"] == "error", (body, answer)
            assert answer["data"]["code"] == rest.json()["error"]["code"], (body, answer, rest.json())
            assert answer["data"]["details"].get("fields") == rest.json()["error"]["details"].get("fields"), body
        chat = await request(ws, {"type": "ai.chat", "id": "c", "messages": [{"role": "robot", "content": "x"}]})
        assert chat["data"]["details"]["fields"][0]["field"] == "messages.0.role"


async def test_only_its_owner_may_follow_a_generation(live: Live) -> None:
    _, bob_key = await live.h.user_with_key("bob")
    async with live.client() as ws, live.client() as other_tab, live.client(bob_key) as bob:
        body = {"prompt": "Count to twenty.", "max_tokens": 40, "temperature": 0}
        ack = await request(ws, {"type": "ai.generate", "id": 1, **body})
        topic = ack["data"]["topic"]
        refused = await request(bob, {"type": "subscribe", "id": 1, "topic": topic})
        assert refused["data"]["code"] == "not_found_error"
        # The owner's other connection may watch it (from now on).
        assert (await request(other_tab, {"type": "subscribe", "id": 1, "topic": topic}))["type"] == "ack"
        mine = await receive_until(ws, done)
        watched = await receive_until(other_tab, done)
        assert watched[-1] == mine[-1]
        assert (await request(bob, {"type": "ping", "id": 2}))["type"] == "pong"  # bob got nothing


async def test_closing_the_socket_stops_the_model(live: Live) -> None:
    h = live.h
    async with live.client() as ws:
        body = {"prompt": "Write a very long story about a dragon.", "max_tokens": 400, "temperature": 0}
        ack = await request(ws, {"type": "ai.generate", "id": 1, **body})
        generation_id = ack["data"]["generation_id"]
        assert (await receive(ws))["event"] == "ai_generation_start"
        first = await receive(ws)
        assert first["event"] == "ai_generation_progress"
    # The socket is closed with the story unfinished: the generation is cancelled, the model stops.
    deadline = time.monotonic() + 15
    while not (rows := [r for r in await log_rows(h) if r["request_id"] == generation_id]):
        assert time.monotonic() < deadline, "the cancelled call was never logged"
        await asyncio.sleep(0.05)  # the log row is written when the cancelled stream has closed
    [row] = rows
    assert (row["door"], row["status"], row["finish_reason"]) == ("ws", "cancelled", "cancelled")
    assert 1 <= row["completion_tokens"] < 100  # far below the 400 asked for
    gateway = h.runtime.gateway
    _, model = gateway.resolve(CHAT_MODEL)
    pool = gateway.provider_for(model)._pools[model_path(model)]  # type: ignore[attr-defined]
    while not pool.idle:  # the worker thread went back to the pool
        assert time.monotonic() < deadline, "the generation never stopped"
        await asyncio.sleep(0.02)
    # And the model serves the next request.
    async with live.client() as ws:
        await request(ws, {"type": "ai.generate", "id": 2, "prompt": "Say hi.", "max_tokens": 4})
        assert (await receive_until(ws, done))[-1]["type"] == "complete"
