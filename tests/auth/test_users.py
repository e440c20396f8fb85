"""Users API: admin-only, validated field by field, conflicts and unknown ids answered in the envelope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, Harness
from trellis.settings import Role

USERS = "/api/v1/users"
ADMIN = Harness.auth(ADMIN_KEY)
PASSWORD = "correct horse battery staple"


async def test_create_user(harness: Harness) -> None:
    response = await harness.client.post(
        USERS, headers=ADMIN, json={"username": "alice.w-1_x", "password": PASSWORD, "role": "viewer"}
    )
    data = assert_ok(response, 201)
    assert set(data) == {"id", "username", "role", "disabled", "created_at"}
    assert data["id"].startswith("usr_")
    assert data["username"] == "alice.w-1_x"
    assert data["role"] == "viewer"
    assert data["disabled"] is False
    assert PASSWORD not in response.text

    listed = assert_ok(await harness.client.get(USERS, headers=ADMIN))
    assert sorted(u["username"] for u in listed) == ["admin", "alice.w-1_x"]
    assert all("password_hash" not in u for u in listed)


async def test_role_defaults_to_developer_and_password_is_optional(harness: Harness) -> None:
    data = assert_ok(await harness.client.post(USERS, headers=ADMIN, json={"username": "bot-1"}), 201)
    assert data["role"] == "developer"


async def test_duplicate_username_is_409(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url) as h:
        assert_ok(await h.client.post(USERS, headers=ADMIN, json={"username": "bob"}), 201)
        error = assert_error(
            await h.client.post(USERS, headers=ADMIN, json={"username": "bob", "role": "admin"}), 409, "conflict_error"
        )
        assert error["details"] == {"username": "bob"}
        assert_error(await h.client.post(USERS, headers=ADMIN, json={"username": "admin"}), 409, "conflict_error")
        # The failed insert left the database usable and unchanged.
        users = assert_ok(await h.client.get(USERS, headers=ADMIN))
        assert sorted((u["username"], u["role"]) for u in users) == [("admin", "admin"), ("bob", "developer")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "a b"}, "username"),
        ({"username": "ab"}, "username"),
        ({"username": "x" * 65}, "username"),
        ({"username": "bob/../admin"}, "username"),
        ({"username": "bob\n"}, "username"),
        ({"username": "bøb"}, "username"),
        ({"username": "bob", "password": "short"}, "password"),
        ({"username": "bob", "password": "x" * 1025}, "password"),
        ({"username": "bob", "role": "superuser"}, "role"),
        ({"username": "bob", "role": "ADMIN"}, "role"),
        ({"username": "bob", "is_admin": True}, "is_admin"),
        ({"username": "bob", "disabled": False}, "disabled"),
        ({"username": 123}, "username"),
        ({"username": ["bob"]}, "username"),
        ({"username": "bob", "password": 12345678}, "password"),
        ({"username": "bob", "role": 1}, "role"),
        ({}, "username"),
        ({"password": PASSWORD, "role": "viewer"}, "username"),
    ],
)
async def test_invalid_user_is_400_naming_the_field(harness: Harness, body: dict[str, Any], field: str) -> None:
    error = assert_error(await harness.client.post(USERS, headers=ADMIN, json=body), 400, "validation_error")
    assert field in field_names(error), error
    for entry in error["details"]["fields"]:
        assert entry["location"] == "body"
        assert entry["message"]
    assert len(assert_ok(await harness.client.get(USERS, headers=ADMIN))) == 1


@pytest.mark.parametrize(
    "content",
    [b'{"username": "bob",', b"username=bob", b'{"username": "bob"}}', b"\xff\xfe", b""],
)
async def test_malformed_json_is_400(harness: Harness, content: bytes) -> None:
    response = await harness.client.post(USERS, headers={**ADMIN, "Content-Type": "application/json"}, content=content)
    error = assert_error(response, 400, "validation_error")
    assert error["details"]["fields"]


@pytest.mark.parametrize("body", [["bob"], "bob", 42, None])
async def test_body_that_is_not_an_object_is_400(harness: Harness, body: Any) -> None:
    assert_error(await harness.client.post(USERS, headers=ADMIN, json=body), 400, "validation_error")


async def test_non_admin_cannot_manage_users(harness: Harness) -> None:
    h = harness
    target, _ = await h.user_with_key("carl")
    for role in (Role.DEVELOPER, Role.VIEWER):
        _, key = await h.user_with_key(f"user-{role.value}", role)
        auth = h.auth(key)
        error = assert_error(await h.client.get(USERS, headers=auth), 403, "authorization_error")
        assert "admin" in error["message"]
        assert_error(await h.client.post(USERS, headers=auth, json={"username": "mallory"}), 403, "authorization_error")
        assert_error(await h.client.post(f"{USERS}/{target}/disable", headers=auth), 403, "authorization_error")
    names = [u["username"] for u in assert_ok(await h.client.get(USERS, headers=ADMIN))]
    assert "mallory" not in names
    assert all(not u["disabled"] for u in assert_ok(await h.client.get(USERS, headers=ADMIN)))


async def test_unauthenticated_user_calls_are_401(harness: Harness) -> None:
    assert_error(await harness.client.get(USERS), 401, "authentication_error")
    assert_error(await harness.client.post(USERS, json={"username": "bob"}), 401, "authentication_error")


@pytest.mark.parametrize("action", ["disable", "enable"])
async def test_unknown_user_id_is_404(harness: Harness, action: str) -> None:
    error = assert_error(
        await harness.client.post(f"{USERS}/usr_nobody/{action}", headers=ADMIN), 404, "not_found_error"
    )
    assert error["details"] == {"id": "usr_nobody"}


async def test_admin_cannot_disable_self(harness: Harness) -> None:
    response = await harness.client.post(f"{USERS}/{harness.admin.user_id}/disable", headers=ADMIN)
    assert_error(response, 409, "conflict_error")
    me = assert_ok(await harness.client.get("/api/v1/auth/me", headers=ADMIN))
    assert me["id"] == harness.admin.user_id


async def test_admin_can_disable_and_enable_another_admin(harness: Harness) -> None:
    other_id, other_key = await harness.user_with_key("root2", Role.ADMIN)
    assert assert_ok(await harness.client.post(f"{USERS}/{other_id}/disable", headers=ADMIN))["disabled"] is True
    assert_error(await harness.client.get(USERS, headers=harness.auth(other_key)), 401, "authentication_error")
    assert assert_ok(await harness.client.post(f"{USERS}/{other_id}/enable", headers=ADMIN))["disabled"] is False
    assert_ok(await harness.client.get(USERS, headers=harness.auth(other_key)))


async def test_created_user_can_log_in_with_its_password(harness: Harness) -> None:
    assert_ok(await harness.client.post(USERS, headers=ADMIN, json={"username": "dora", "password": PASSWORD}), 201)
    response = await harness.client.post("/api/v1/auth/token", json={"username": "dora", "password": PASSWORD})
    assert assert_ok(response)["access_token"]
