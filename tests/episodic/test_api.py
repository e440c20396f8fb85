"""GET /api/v1/db/logs and /api/v1/db/logs/{id}: owner-scoped, filtered, keyset-paginated."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, Harness
from tests.episodic.support import BASE_TIME, record
from trellis.episodic.schemas import CallRecord
from trellis.settings import Role

LOGS = "/api/v1/db/logs"
ADMIN = Harness.auth(ADMIN_KEY)


async def _write(h: Harness, *records: CallRecord) -> None:
    for r in records:
        assert h.runtime.logs.submit(r)
    await h.runtime.logs.flush()


def _ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


async def _list(h: Harness, key: str, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = assert_ok(await h.client.get(LOGS, headers=h.auth(key), params=params))
    return page


@pytest.fixture
async def two_users(harness: Harness) -> tuple[Harness, tuple[str, str], tuple[str, str]]:
    """alice and bob, each with a key and a few calls."""
    h = harness
    alice = await h.user_with_key("alice")
    bob = await h.user_with_key("bob")
    await _write(
        h,
        record(alice[0], id="log_a1", created_at=BASE_TIME, prompt="alice one"),
        record(alice[0], id="log_a2", created_at=BASE_TIME + timedelta(minutes=1), prompt="alice two"),
        record(bob[0], id="log_b1", created_at=BASE_TIME + timedelta(minutes=2), prompt="bob one"),
    )
    return h, alice, bob


# --- who sees what -----------------------------------------------------------------------------


async def test_no_credentials_is_401(harness: Harness) -> None:
    assert_error(await harness.client.get(LOGS), 401, "authentication_error")
    assert_error(await harness.client.get(f"{LOGS}/log_x"), 401, "authentication_error")


async def test_users_see_only_their_own_rows(two_users: tuple[Harness, tuple[str, str], tuple[str, str]]) -> None:
    h, (alice_id, alice_key), (_, bob_key) = two_users
    page = await _list(h, alice_key)
    assert _ids(page) == ["log_a2", "log_a1"]
    assert page["next_cursor"] is None
    assert {item["owner_id"] for item in page["items"]} == {alice_id}
    assert _ids(await _list(h, bob_key)) == ["log_b1"]
    # Naming yourself is fine; naming someone else is not.
    assert _ids(await _list(h, alice_key, user_id=alice_id)) == ["log_a2", "log_a1"]


async def test_non_admin_cannot_filter_by_another_user(
    two_users: tuple[Harness, tuple[str, str], tuple[str, str]],
) -> None:
    h, (_, alice_key), (bob_id, _) = two_users
    response = await h.client.get(LOGS, headers=h.auth(alice_key), params={"user_id": bob_id})
    assert_error(response, 403, "authorization_error")


async def test_admin_sees_everyone_and_may_filter_by_user(
    two_users: tuple[Harness, tuple[str, str], tuple[str, str]],
) -> None:
    h, _, (bob_id, _) = two_users
    assert _ids(await _list(h, ADMIN_KEY)) == ["log_b1", "log_a2", "log_a1"]
    assert _ids(await _list(h, ADMIN_KEY, user_id=bob_id)) == ["log_b1"]
    assert _ids(await _list(h, ADMIN_KEY, user_id="usr_nobody")) == []


async def test_get_by_id_is_owner_scoped(two_users: tuple[Harness, tuple[str, str], tuple[str, str]]) -> None:
    h, (alice_id, alice_key), (_, bob_key) = two_users
    item = assert_ok(await h.client.get(f"{LOGS}/log_a1", headers=h.auth(alice_key)))
    assert item["id"] == "log_a1"
    assert item["owner_id"] == alice_id
    # Another user's row and a row that does not exist answer the same.
    foreign = assert_error(await h.client.get(f"{LOGS}/log_a1", headers=h.auth(bob_key)), 404, "not_found_error")
    missing = assert_error(await h.client.get(f"{LOGS}/log_zz", headers=h.auth(bob_key)), 404, "not_found_error")
    assert foreign["message"] == missing["message"]
    assert assert_ok(await h.client.get(f"{LOGS}/log_a1", headers=ADMIN))["id"] == "log_a1"


async def test_a_viewer_can_read_their_logs(harness: Harness) -> None:
    viewer_id, viewer_key = await harness.user_with_key("vera", Role.VIEWER)
    await _write(harness, record(viewer_id, id="log_v"))
    assert _ids(await _list(harness, viewer_key)) == ["log_v"]


async def test_every_field_is_returned(harness: Harness) -> None:
    user_id, key = await harness.user_with_key("fields")
    r = record(
        user_id,
        id="log_full",
        created_at=BASE_TIME + timedelta(microseconds=250_000),
        request_id="req_full",
        door="dspy",
        requested_model="external-model",
        served_model="smollm2-135m",
        provider="llamacpp",
        prompt=None,
        messages=[{"role": "user", "content": "hi"}],
        response="hello",
        prompt_tokens=4,
        completion_tokens=1,
        latency_ms=33.5,
        ttft_ms=4.25,
        cost=0.002,
        cached=True,
        status="error",
        error="provider went away",
        finish_reason="error",
        attempts=3,
        fallback_from="gpt-big",
        module="model_switcher",
    )
    await _write(harness, r)
    item = assert_ok(await harness.client.get(f"{LOGS}/log_full", headers=harness.auth(key)))
    assert item == {
        "id": "log_full",
        "created_at": "2026-03-01T12:00:00.250000Z",
        "owner_id": user_id,
        "request_id": "req_full",
        "door": "dspy",
        "requested_model": "external-model",
        "served_model": "smollm2-135m",
        "provider": "llamacpp",
        "prompt": None,
        "messages": [{"role": "user", "content": "hi"}],
        "response": "hello",
        "prompt_tokens": 4,
        "completion_tokens": 1,
        "latency_ms": 33.5,
        "ttft_ms": 4.25,
        "cost": 0.002,
        "cached": True,
        "status": "error",
        "error": "provider went away",
        "finish_reason": "error",
        "attempts": 3,
        "fallback_from": "gpt-big",
        "module": "model_switcher",
    }
    assert (await _list(harness, key))["items"] == [item]


# --- filters -----------------------------------------------------------------------------------


@pytest.fixture
async def filtered(harness: Harness) -> tuple[Harness, str]:
    h = harness
    user_id, key = await h.user_with_key("filters")
    t = BASE_TIME
    await _write(
        h,
        record(user_id, id="log_1", created_at=t, requested_model="external-model", served_model="smollm2-135m"),
        record(
            user_id,
            id="log_2",
            created_at=t + timedelta(hours=1),
            requested_model="gpt-4o",
            served_model="smollm2-135m",
            fallback_from="gpt-4o",
            door="openai",
        ),
        record(
            user_id,
            id="log_3",
            created_at=t + timedelta(hours=2),
            requested_model="gpt-4o",
            served_model="gpt-4o",
            status="error",
            door="openai",
            response=None,
            error="rate limited",
        ),
        record(
            user_id,
            id="log_4",
            created_at=t + timedelta(hours=3),
            requested_model="specialized-agent",
            served_model=None,
            status="cancelled",
            door="cli",
        ),
        record(
            user_id,
            id="log_5",
            created_at=t + timedelta(hours=4),
            door="workflow",
            requested_model="minilm-l6",
            served_model="minilm-l6",
        ),
    )
    return h, key


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"model": "smollm2-135m"}, ["log_2", "log_1"]),  # served
        ({"model": "gpt-4o"}, ["log_3", "log_2"]),  # requested (log_2 fell back) or served
        ({"model": "external-model"}, ["log_1"]),
        ({"model": "unknown"}, []),
        ({"status": "ok"}, ["log_5", "log_2", "log_1"]),
        ({"status": "error"}, ["log_3"]),
        ({"status": "cancelled"}, ["log_4"]),
        ({"door": "openai"}, ["log_3", "log_2"]),
        ({"door": "cli"}, ["log_4"]),
        ({"door": "dspy"}, []),
        ({"door": "openai", "status": "ok"}, ["log_2"]),
        # since is inclusive, until exclusive.
        ({"since": "2026-03-01T13:00:00Z"}, ["log_5", "log_4", "log_3", "log_2"]),
        ({"until": "2026-03-01T13:00:00Z"}, ["log_1"]),
        ({"since": "2026-03-01T13:00:00Z", "until": "2026-03-01T15:00:00+00:00"}, ["log_3", "log_2"]),
        ({"since": "2026-03-01T14:00:00+01:00"}, ["log_5", "log_4", "log_3", "log_2"]),  # an offset is honoured
        ({"since": "2026-03-01T13:00:00"}, ["log_5", "log_4", "log_3", "log_2"]),  # no offset: UTC
        ({"since": "2026-03-01T13:00:00Z", "until": "2026-03-01T13:00:00Z"}, []),
    ],
)
async def test_filters(filtered: tuple[Harness, str], params: dict[str, str], expected: list[str]) -> None:
    h, key = filtered
    assert _ids(await _list(h, key, **params)) == expected


async def test_q_matches_prompt_messages_and_response_case_insensitively(
    database_url: str, make_harness: Callable[..., Any]
) -> None:
    async with make_harness(database_url=database_url) as h:
        await _check_q(h)


async def _check_q(h: Harness) -> None:
    user_id, key = await h.user_with_key("searcher")
    t = BASE_TIME
    await _write(
        h,
        record(user_id, id="log_p", created_at=t, prompt="Tell me about the Giraffe", response="tall"),
        record(
            user_id,
            id="log_m",
            created_at=t + timedelta(seconds=1),
            prompt=None,
            messages=[{"role": "user", "content": 'a giraffe said "hi" to the café'}],
            response="ok",
        ),
        record(user_id, id="log_r", created_at=t + timedelta(seconds=2), prompt="x", response="GIRAFFES are tall"),
        record(user_id, id="log_pct", created_at=t + timedelta(seconds=3), prompt="discount: 100% off", response=""),
        record(user_id, id="log_1000", created_at=t + timedelta(seconds=4), prompt="1000 off", response=""),
        record(user_id, id="log_us", created_at=t + timedelta(seconds=5), prompt="snake_case", response=""),
        record(user_id, id="log_ux", created_at=t + timedelta(seconds=6), prompt="snakeXcase", response=""),
        record(user_id, id="log_bs", created_at=t + timedelta(seconds=7), prompt="C:\\temp", response=""),
    )

    async def q(text: str) -> list[str]:
        return _ids(await _list(h, key, q=text))

    assert await q("giraffe") == ["log_r", "log_m", "log_p"]
    assert await q("GIRAFFE") == ["log_r", "log_m", "log_p"]
    assert await q("tall") == ["log_r", "log_p"]
    # Text inside messages, including characters JSON escapes (quotes, non-ASCII).
    assert await q('said "hi"') == ["log_m"]
    assert await q("café") == ["log_m"]
    # LIKE wildcards in the query are literal characters.
    assert await q("100%") == ["log_pct"]
    assert await q("snake_case") == ["log_us"]
    assert await q("%") == ["log_pct"]
    assert await q("_") == ["log_us"]
    assert await q("C:\\temp") == ["log_bs"]
    assert await q("zebra") == []


# --- pagination --------------------------------------------------------------------------------


async def test_cursor_walks_every_row_once_in_order(database_url: str, make_harness: Callable[..., Any]) -> None:
    async with make_harness(database_url=database_url) as h:
        user_id, key = await h.user_with_key("pager")
        other_id, _ = await h.user_with_key("other")
        records = []
        for i in range(23):
            # Groups of three share a timestamp: the id breaks the tie.
            created = BASE_TIME + timedelta(seconds=i // 3, microseconds=7)
            records.append(record(user_id, id=f"log_{i:02d}_{'abc'[i % 3]}", created_at=created))
        records.append(record(other_id, id="log_other", created_at=BASE_TIME + timedelta(seconds=3)))
        await _write(h, *records)
        expected = [
            r.id for r in sorted(records[:-1], key=lambda r: (r.created_at, r.id), reverse=True) if r.id is not None
        ]

        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 5}
            if cursor is not None:
                params["cursor"] = cursor
            page = await _list(h, key, **params)
            pages += 1
            assert len(page["items"]) <= 5
            seen.extend(_ids(page))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected
        assert pages == 5
        # Admins walk everyone's rows the same way.
        admin_seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            page = assert_ok(await h.client.get(LOGS, headers=ADMIN, params=params))
            admin_seen.extend(_ids(page))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(admin_seen) == sorted([*expected, "log_other"])
        assert len(admin_seen) == len(set(admin_seen)) == 24


async def test_cursor_combines_with_filters_and_exact_fit_has_no_next(harness: Harness) -> None:
    h = harness
    user_id, key = await h.user_with_key("combo")
    await _write(
        h,
        *[
            record(user_id, id=f"log_{i}", created_at=BASE_TIME + timedelta(seconds=i), status=("error", "ok")[i % 2])
            for i in range(10)
        ],
    )
    first = await _list(h, key, status="ok", limit=3)
    assert _ids(first) == ["log_9", "log_7", "log_5"]
    second = await _list(h, key, status="ok", limit=3, cursor=first["next_cursor"])
    assert _ids(second) == ["log_3", "log_1"]
    assert second["next_cursor"] is None
    exact = await _list(h, key, status="error", limit=5)
    assert len(exact["items"]) == 5
    assert exact["next_cursor"] is None


async def test_default_limit_is_50(harness: Harness) -> None:
    user_id, key = await harness.user_with_key("many")
    await _write(harness, *[record(user_id, created_at=BASE_TIME + timedelta(seconds=i)) for i in range(55)])
    page = await _list(harness, key)
    assert len(page["items"]) == 50
    assert page["next_cursor"] is not None
    assert len((await _list(harness, key, cursor=page["next_cursor"]))["items"]) == 5


# --- bad input ---------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"door": "telnet"}, "door"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45T00:00:00Z"}, "until"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since"),
        ({"q": ""}, "q"),
        ({"cursor": "!!!not base64!!!"}, "cursor"),
        ({"cursor": _b64(b"not json")}, "cursor"),
        ({"cursor": _b64(b"[1, 2]")}, "cursor"),
        ({"cursor": _b64(json.dumps({"t": "2026-03-01T00:00:00+00:00"}).encode())}, "cursor"),
        ({"cursor": _b64(json.dumps({"t": "not a time", "i": "log_x"}).encode())}, "cursor"),
        ({"cursor": _b64(json.dumps({"t": "2026-03-01T00:00:00", "i": "log_x"}).encode())}, "cursor"),
        ({"cursor": _b64(json.dumps({"t": "2026-03-01T00:00:00+00:00", "i": 5}).encode())}, "cursor"),
        ({"cursor": _b64(b"\xff\xfe")}, "cursor"),
        ({"cursor": "x" * 600}, "cursor"),
    ],
)
async def test_bad_input_is_400_naming_the_field(harness: Harness, params: dict[str, str], field: str) -> None:
    _, key = await harness.user_with_key("badinput")
    response = await harness.client.get(LOGS, headers=harness.auth(key), params=params)
    error = assert_error(response, 400, "validation_error")
    assert field in field_names(error), error
