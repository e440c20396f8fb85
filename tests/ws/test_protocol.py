"""``/ws`` over a real socket with a real client: authentication (first message, JWT, tickets),
Origin, every kind of bad input, limits, topics and who may follow them, credentials taken away
mid-connection, resume and gaps."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import ADMIN_KEY
from tests.workflows.support import ADMIN, execute, save
from tests.ws.conftest import Live, closed, receive, receive_until, request
from trellis.settings import Role

LiveFactory = Callable[..., AbstractAsyncContextManager[Live]]
HELLO = {"steps": [{"id": "greet", "type": "transform", "with": {"value": "hi"}}]}


async def ticket(live: Live, headers: dict[str, str] = ADMIN) -> str:
    response = await live.h.client.post("/api/v1/ws/ticket", headers=headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["expires_in"] == 30
    value: str = data["ticket"]
    return value


# --- authentication -----------------------------------------------------------------------------------


async def test_an_api_key_in_the_first_message_then_ping(live: Live) -> None:
    async with live.open() as ws:
        ack = await request(ws, {"type": "auth", "id": 1, "credential": ADMIN_KEY})
        assert ack["type"] == "ack"
        assert ack["event"] == "auth"
        assert ack["data"]["username"] == "admin"
        assert ack["data"]["role"] == "admin"
        assert set(ack["data"]) == {"user_id", "username", "role", "scopes", "expires_at"}
        assert list(ack) == ["type", "component", "event", "data", "timestamp", "id", "topic"]
        pong = await request(ws, {"type": "ping", "id": "p-1"})
        assert (pong["type"], pong["id"], pong["topic"]) == ("pong", "p-1", None)


async def test_a_jwt_in_the_first_message(live: Live) -> None:
    await live.h.create_user("carol", password="a-long-password")
    token = await live.h.client.post("/api/v1/auth/token", json={"username": "carol", "password": "a-long-password"})
    async with live.client(token.json()["data"]["access_token"]) as ws:
        assert (await request(ws, {"type": "ping", "id": 2}))["type"] == "pong"


@pytest.mark.parametrize(
    "first",
    [
        {"type": "auth", "id": 1, "credential": "trl_not-a-key"},
        {"type": "auth", "id": 1, "credential": "a.b.c"},
        {"type": "auth", "id": 1},
        {"type": "subscribe", "id": 1, "topic": "dashboard"},
        ["not", "an", "object"],
        "not json",
    ],
    ids=["bad key", "bad jwt", "no credential", "not auth", "array", "not json"],
)
async def test_without_a_valid_first_auth_message_the_socket_closes_4401(live: Live, first: Any) -> None:
    async with live.open() as ws:
        await ws.send(first if isinstance(first, str) else json.dumps(first))
        code, reason, before = await closed(ws)
    assert code == 4401
    assert reason
    [error] = before
    assert error["type"] == "error"
    assert error["data"]["code"] == "authentication_error"


async def test_no_auth_message_in_time_closes_4401(live_factory: LiveFactory) -> None:
    async with live_factory(ws={"auth_timeout_seconds": 0.2}) as live, live.open() as ws:
        code, reason, before = await closed(ws)
    assert (code, reason) == (4401, "No auth message in time")
    assert before[0]["data"]["code"] == "authentication_error"


async def test_a_ticket_works_once(live: Live) -> None:
    value = await ticket(live)
    async with live.open(query=f"?ticket={value}") as ws:
        ack = await receive(ws)
        assert (ack["type"], ack["event"], ack["data"]["username"]) == ("ack", "auth", "admin")
        assert (await request(ws, {"type": "ping", "id": 1}))["type"] == "pong"
    async with live.open(query=f"?ticket={value}") as ws:
        code, reason, before = await closed(ws)
    assert (code, reason) == (4401, "Invalid ticket, or already used")
    assert before[0]["data"]["code"] == "authentication_error"


async def test_an_expired_ticket_is_refused(live: Live) -> None:
    value = await ticket(live)
    live.h.clock.advance(31)
    async with live.open(query=f"?ticket={value}") as ws:
        code, reason, _ = await closed(ws)
    assert (code, reason) == (4401, "Ticket has expired")


async def test_a_ticket_keeps_its_credentials_limits(live: Live) -> None:
    user_id = await live.h.create_user("dave")
    _, key = await live.h.create_key(user_id, scopes=["read"])
    value = await ticket(live, live.h.auth(key))
    async with live.open(query=f"?ticket={value}") as ws:
        ack = await receive(ws)
        assert ack["data"]["scopes"] == ["read"]
        refused = await request(ws, {"type": "ai.generate", "id": 1, "prompt": "hi"})
        assert refused["data"]["code"] == "authorization_error"


async def test_tickets_need_a_credential(live: Live) -> None:
    response = await live.h.client.post("/api/v1/ws/ticket")
    assert response.status_code == 401
    async with live.open(query="?ticket=wst_made-up") as ws:
        code, _, _ = await closed(ws)
    assert code == 4401


async def test_no_other_credential_is_taken_from_the_url(live: Live) -> None:
    async with live.open(query=f"?token={ADMIN_KEY}") as ws:
        code, reason, _ = await closed(ws)
    assert code == 4401
    assert "ticket" in reason


# --- Origin ---------------------------------------------------------------------------------------


async def test_a_foreign_origin_is_refused_at_the_handshake(live_factory: LiveFactory) -> None:
    async with live_factory(ws={"allowed_origins": ["https://app.example.com"]}) as live:
        with pytest.raises(InvalidStatus) as refused:
            async with live.open(origin="https://evil.example.com"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        for allowed in ("https://app.example.com", live.url):  # the setting, and the page's own host
            async with live.client(origin=allowed) as ws:
                assert (await request(ws, {"type": "ping", "id": 1}))["type"] == "pong"


# --- bad input and limits ---------------------------------------------------------------------------


async def test_malformed_messages_are_answered_and_the_socket_stays_open(live: Live) -> None:
    async with live.client() as ws:
        cases: list[tuple[str | bytes, Any, str, str]] = [
            ("{not json", None, "validation_error", "json_invalid"),
            ("[1, 2]", None, "validation_error", "model_type"),
            (json.dumps({"type": "ping"}), None, "validation_error", "missing"),
            (json.dumps({"type": "ping", "id": {"an": "object"}}), None, "validation_error", "missing"),
            (json.dumps({"type": "ping", "id": "x" * 65}), None, "validation_error", "missing"),
            (json.dumps({"type": "explode", "id": 7}), 7, "validation_error", "literal_error"),
            (json.dumps({"type": "subscribe", "id": 8}), 8, "validation_error", "missing"),
            (
                json.dumps({"type": "subscribe", "id": 9, "topic": "run:x", "last_id": "3"}),
                9,
                "validation_error",
                "int_type",
            ),
            (
                json.dumps({"type": "subscribe", "id": 10, "topic": "run:x", "extra": 1}),
                10,
                "validation_error",
                "extra_forbidden",
            ),
            (json.dumps({"type": "auth", "id": 11, "credential": ADMIN_KEY}), 11, "conflict_error", ""),
            (b"\x00binary", None, "validation_error", "frame_type"),
        ]
        for frame, client_id, code, field_type in cases:
            await ws.send(frame)
            error = await receive(ws)
            assert error["type"] == "error", (frame, error)
            assert error["id"] == client_id, (frame, error)
            assert error["data"]["code"] == code, (frame, error)
            if field_type:
                assert error["data"]["details"]["fields"][0]["type"] == field_type, (frame, error)
            assert error["data"]["message"]
        assert (await request(ws, {"type": "ping", "id": "still-open"}))["type"] == "pong"


async def test_an_oversized_message_is_refused_and_the_socket_closed_1009(live_factory: LiveFactory) -> None:
    async with live_factory(ws={"max_message_bytes": 1024}) as live, live.client() as ws:
        assert (await request(ws, {"type": "ping", "id": 1, "pad": ""}))["type"] == "error"  # extra field
        await ws.send(json.dumps({"type": "ping", "id": 2, "pad": "x" * 2000}))
        code, reason, before = await closed(ws)
    assert code == 1009
    assert "1024" in reason
    assert before[-1]["data"]["code"] == "payload_too_large_error"
    assert before[-1]["data"]["details"]["max_bytes"] == 1024


async def test_a_flood_is_refused_then_closed_4429(live_factory: LiveFactory) -> None:
    # The harness's clock does not move: the bucket never refills during the test.
    settings = {"message_burst": 5, "messages_per_second": 1, "max_refused": 3}
    async with live_factory(ws=settings) as live, live.client() as ws:
        for n in range(5):
            assert (await request(ws, {"type": "ping", "id": n}))["type"] == "pong"
        for n in range(5, 7):
            refused = await request(ws, {"type": "ping", "id": n})
            assert refused["data"]["code"] == "rate_limit_error"
            assert refused["data"]["details"]["refused"] == n - 4
        await ws.send(json.dumps({"type": "ping", "id": 7}))
        code, reason, before = await closed(ws)
    assert (code, reason) == (4429, "too many messages")
    assert before[-1]["data"]["code"] == "rate_limit_error"


# --- topics and who may follow them -------------------------------------------------------------------


async def test_topics_one_may_not_follow_are_refused_with_no_data(live: Live) -> None:
    h = live.h
    await save(h, "hello", HELLO)
    admins_run = await execute(h, "hello")
    bob_id, bob_key = await h.user_with_key("bob")
    async with live.client(bob_key) as ws:
        cases = [
            (f"run:{admins_run['id']}", "not_found_error"),  # another user's run: indistinguishable from none
            ("run:run_does_not_exist", "not_found_error"),
            (f"user:{h.admin.user_id}", "authorization_error"),
            ("dashboard", "authorization_error"),
            (f"generation:{h.admin.user_id}.0123456789abcdef", "not_found_error"),
            ("nonsense", "validation_error"),
            ("run:", "validation_error"),
        ]
        for n, (topic, code) in enumerate(cases):
            error = await request(ws, {"type": "subscribe", "id": n, "topic": topic})
            assert (error["type"], error["data"]["code"], error["topic"]) == ("error", code, topic)
            assert "run" not in error["data"].get("details", {}) or error["data"]["details"] == {"run_id": topic[4:]}
        assert (await request(ws, {"type": "subscribe", "id": "own", "topic": f"user:{bob_id}"}))["type"] == "ack"
        # Nothing of the admin's run was sent: the next message is the answer to this ping.
        assert (await request(ws, {"type": "ping", "id": "last"}))["id"] == "last"
    async with live.client() as ws:
        assert (await request(ws, {"type": "subscribe", "id": 1, "topic": "dashboard"}))["type"] == "ack"


async def test_a_users_feed_carries_their_runs_and_unsubscribe_stops_it(live: Live) -> None:
    h = live.h
    await save(h, "hello", HELLO)
    async with live.client() as ws:
        topic = f"user:{h.admin.user_id}"
        ack = await request(ws, {"type": "subscribe", "id": 1, "topic": topic})
        assert (ack["type"], ack["event"], ack["topic"], ack["data"]) == ("ack", "subscribe", topic, {"topic": topic})
        again = await request(ws, {"type": "subscribe", "id": 2, "topic": topic})
        assert again["data"]["already"] is True
        run = await execute(h, "hello")
        events = await receive_until(ws, lambda m: m["event"] == "workflow_execution_complete")
        assert [m["data"]["type"] for m in events] == [
            "run.queued",
            "run.started",
            "step.started",
            "step.succeeded",
            "run.succeeded",
        ]
        assert {m["data"]["run_id"] for m in events} == {run["id"]}
        assert [m["id"] for m in events] == [1, 2, 3, 4, 5]
        assert events[0]["event"] == "workflow_execution_start"
        assert events[-1]["type"] == "complete"
        bye = await request(ws, {"type": "unsubscribe", "id": 3, "topic": topic})
        assert bye["data"] == {"topic": topic, "was_subscribed": True}
        await execute(h, "hello")
        assert (await request(ws, {"type": "ping", "id": "after"}))["id"] == "after"  # nothing came before it


async def test_resuming_a_feed_after_missed_messages_gets_a_gap(live: Live) -> None:
    h = live.h
    await save(h, "hello", HELLO)
    await execute(h, "hello")  # five messages on the admin's feed, ids 1 to 5
    topic = f"user:{h.admin.user_id}"
    async with live.client() as ws:
        await request(ws, {"type": "subscribe", "id": 1, "topic": topic, "last_id": 2})
        gap = await receive(ws)
        assert (gap["type"], gap["topic"], gap["id"]) == ("gap", topic, None)
        assert gap["data"] == {"reason": "missed", "after": 2, "last_id": 5}
        # Up to date: no gap.
        await request(ws, {"type": "unsubscribe", "id": 2, "topic": topic})
        await request(ws, {"type": "subscribe", "id": 3, "topic": topic, "last_id": 5})
        assert (await request(ws, {"type": "ping", "id": 4}))["type"] == "pong"


async def test_too_many_subscriptions_are_refused(live_factory: LiveFactory) -> None:
    async with live_factory(ws={"max_subscriptions": 1}) as live, live.client() as ws:
        await request(ws, {"type": "subscribe", "id": 1, "topic": f"user:{live.h.admin.user_id}"})
        refused = await request(ws, {"type": "subscribe", "id": 2, "topic": "dashboard"})
        assert refused["data"]["code"] == "conflict_error"


# --- credentials taken away -----------------------------------------------------------------------------


async def test_a_key_revoked_mid_connection_closes_it_4401(live: Live) -> None:
    h = live.h
    user_id = await h.create_user("erin")
    key_id, key = await h.create_key(user_id)
    async with live.client(key) as ws:
        await request(ws, {"type": "subscribe", "id": 1, "topic": f"user:{user_id}"})
        revoked = await h.client.delete(f"/api/v1/keys/{key_id}", headers=ADMIN)
        assert revoked.status_code == 200, revoked.text
        code, reason, before = await closed(ws)
    assert (code, reason) == (4401, "API key has been revoked")
    assert before[-1]["data"]["code"] == "authentication_error"


async def test_a_disabled_user_is_closed_4401(live: Live) -> None:
    h = live.h
    user_id, key = await h.user_with_key("frank", Role.VIEWER)
    async with live.client(key) as ws:
        response = await h.client.post(f"/api/v1/users/{user_id}/disable", headers=ADMIN)
        assert response.status_code == 200, response.text
        code, reason, _ = await closed(ws)
    assert (code, reason) == (4401, "User is disabled")


async def test_an_expired_token_closes_the_connection_4401(live: Live) -> None:
    h = live.h
    await h.create_user("gina", password="a-long-password")
    token = await h.client.post("/api/v1/auth/token", json={"username": "gina", "password": "a-long-password"})
    async with live.client(token.json()["data"]["access_token"]) as ws:
        assert (await request(ws, {"type": "ping", "id": 1}))["type"] == "pong"
        h.clock.advance(86_400 + 1)  # the token's lifetime, on the server's clock
        code, reason, _ = await closed(ws)
    assert (code, reason) == (4401, "Token has expired")
