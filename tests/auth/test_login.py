"""Password login: one answer for every failure, so it reveals neither which users exist nor their state."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, JWT_SECRET, Harness
from trellis.settings import Role

TOKEN = "/api/v1/auth/token"
PASSWORD = "correct horse battery staple"
INVALID = "Invalid username or password"


async def _login(h: Harness, username: str, password: str) -> Any:
    return await h.client.post(TOKEN, json={"username": username, "password": password})


async def test_login_returns_a_verifiable_token(harness: Harness) -> None:
    user_id = await harness.create_user("olive", Role.DEVELOPER, password=PASSWORD)
    data = assert_ok(await _login(harness, "olive", PASSWORD))
    assert set(data) == {"access_token", "token_type", "expires_in", "expires_at"}
    claims = jwt.decode(
        data["access_token"], JWT_SECRET, algorithms=["HS256"], audience="trellis-api", issuer="trellis"
    )
    assert claims["sub"] == user_id
    assert claims["exp"] - claims["iat"] == data["expires_in"] == 86_400
    me = assert_ok(await harness.client.get("/api/v1/auth/me", headers=harness.auth(data["access_token"])))
    assert (me["username"], me["auth"]) == ("olive", "jwt")


async def test_wrong_password_and_unknown_user_look_the_same(harness: Harness) -> None:
    await harness.create_user("paul", password=PASSWORD)
    wrong = assert_error(await _login(harness, "paul", PASSWORD + "!"), 401, "authentication_error")
    unknown = assert_error(await _login(harness, "nobody", PASSWORD), 401, "authentication_error")
    case = assert_error(await _login(harness, "PAUL", PASSWORD), 401, "authentication_error")
    assert wrong == unknown == case
    assert wrong["message"] == INVALID
    assert wrong["details"] == {}


async def test_user_without_password_cannot_log_in(harness: Harness) -> None:
    await harness.create_user("keyonly")
    for attempt in ("", "x", PASSWORD):
        response = await _login(harness, "keyonly", attempt)
        if attempt == "":
            assert_error(response, 400, "validation_error")
        else:
            assert assert_error(response, 401, "authentication_error")["message"] == INVALID
    # The bootstrap admin has no password either (only a key).
    assert assert_error(await _login(harness, "admin", ADMIN_KEY), 401, "authentication_error")["message"] == INVALID


async def test_disabled_user_cannot_log_in(harness: Harness) -> None:
    user_id = await harness.create_user("quentin", password=PASSWORD)
    assert_ok(await _login(harness, "quentin", PASSWORD))
    await harness.runtime.auth.set_user_disabled(harness.admin, user_id, True)
    error = assert_error(await _login(harness, "quentin", PASSWORD), 401, "authentication_error")
    assert error["message"] == INVALID
    await harness.runtime.auth.set_user_disabled(harness.admin, user_id, False)
    assert_ok(await _login(harness, "quentin", PASSWORD))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "paul"}, "password"),
        ({"password": PASSWORD}, "username"),
        ({"username": "paul", "password": PASSWORD, "role": "admin"}, "role"),
        ({"username": ["paul"], "password": PASSWORD}, "username"),
        ({"username": "paul", "password": None}, "password"),
    ],
)
async def test_malformed_login_is_400(harness: Harness, body: dict[str, Any], field: str) -> None:
    error = assert_error(await harness.client.post(TOKEN, json=body), 400, "validation_error")
    assert field in field_names(error)


async def test_login_needs_no_credential_and_ignores_one(harness: Harness) -> None:
    await harness.create_user("rita", password=PASSWORD)
    response = await harness.client.post(
        TOKEN, json={"username": "rita", "password": PASSWORD}, headers=harness.auth("trl_garbage-garbage-garbage")
    )
    assert_ok(response)
