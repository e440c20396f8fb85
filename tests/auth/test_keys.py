"""API keys: shown once, refused at once when revoked, expired or their owner is disabled, owner-scoped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, Harness
from trellis.settings import Role

ME = "/api/v1/auth/me"
KEYS = "/api/v1/keys"
ADMIN = Harness.auth(ADMIN_KEY)
DAY = 86_400


async def _create_key(h: Harness, key: str, **body: Any) -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(await h.client.post(KEYS, headers=h.auth(key), json={"name": "k", **body}), 201)
    return data


# --- creation and listing --------------------------------------------------------------------


async def test_created_key_is_shown_once_and_works(harness: Harness) -> None:
    h = harness
    user_id, key = await h.user_with_key("ivan")
    created = await _create_key(h, key, name="laptop", scopes=["read"], expires_in_days=30)
    plaintext = created["key"]
    assert plaintext.startswith("trl_")
    assert len(plaintext) > 40
    assert created["owner_id"] == user_id
    assert created["name"] == "laptop"
    assert created["prefix"] == plaintext[:12]
    assert created["scopes"] == ["read"]
    assert created["revoked_at"] is None
    assert created["expires_at"] is not None

    me = assert_ok(await h.client.get(ME, headers=h.auth(plaintext)))
    assert me["key_id"] == created["id"]
    assert me["auth"] == "api_key"
    assert me["scopes"] == ["read"]

    first_id = assert_ok(await h.client.get(ME, headers=h.auth(key)))["key_id"]
    listed = assert_ok(await h.client.get(KEYS, headers=h.auth(key)))
    assert {k["id"] for k in listed} == {first_id, created["id"]}
    for item in listed:
        assert "key" not in item
        assert "key_hash" not in item
    listed_text = (await h.client.get(KEYS, headers=ADMIN)).text
    assert plaintext not in listed_text
    assert created["prefix"] in listed_text


async def test_key_in_x_api_key_header_works(harness: Harness) -> None:
    user_id, key = await harness.user_with_key("jill")
    me = assert_ok(await harness.client.get(ME, headers={"X-API-Key": key}))
    assert me["id"] == user_id


@pytest.mark.parametrize("key", ["trl_not-a-real-key-0123456789abcdefghijkl", "trl_", "garbage", "x" * 500])
async def test_unknown_key_is_refused(harness: Harness, key: str) -> None:
    error = assert_error(await harness.client.get(ME, headers=harness.auth(key)), 401, "authentication_error")
    assert key not in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "k", "expires_in_days": -1}, "expires_in_days"),
        ({"name": "k", "expires_in_days": 3651}, "expires_in_days"),
        ({"name": "k", "expires_in_days": "soon"}, "expires_in_days"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({}, "name"),
        ({"name": "k", "scopes": ["root"]}, "scopes.0"),
        ({"name": "k", "scopes": "read"}, "scopes"),
        ({"name": "k", "key": "trl_chosen-by-caller-0123456789abcdefgh"}, "key"),
    ],
)
async def test_invalid_key_request_is_400(harness: Harness, body: dict[str, Any], field: str) -> None:
    error = assert_error(await harness.client.post(KEYS, headers=ADMIN, json=body), 400, "validation_error")
    assert field in field_names(error)
    assert len(assert_ok(await harness.client.get(KEYS, headers=ADMIN))) == 1  # still only the bootstrap key


async def test_key_for_unknown_user_is_404(harness: Harness) -> None:
    response = await harness.client.post(KEYS, headers=ADMIN, json={"name": "k", "user_id": "usr_nobody"})
    assert_error(response, 404, "not_found_error")


# --- refused on the very next request, on both backends --------------------------------------


async def test_disabled_users_key_is_refused_next_request_and_reenabled(
    make_harness: Callable[..., Any], database_url: str
) -> None:
    async with make_harness(database_url=database_url) as h:
        user_id, key = await h.user_with_key("kate")
        _, other_key = await h.user_with_key("liam")
        assert_ok(await h.client.get(ME, headers=h.auth(key)))

        disabled = assert_ok(await h.client.post(f"/api/v1/users/{user_id}/disable", headers=ADMIN))
        assert disabled["disabled"] is True
        error = assert_error(await h.client.get(ME, headers=h.auth(key)), 401, "authentication_error")
        assert "disabled" in error["message"].lower()
        assert_error(await h.client.get(ME, headers={"X-API-Key": key}), 401, "authentication_error")
        assert_ok(await h.client.get(ME, headers=h.auth(other_key)))  # only that user is affected

        enabled = assert_ok(await h.client.post(f"/api/v1/users/{user_id}/enable", headers=ADMIN))
        assert enabled["disabled"] is False
        assert assert_ok(await h.client.get(ME, headers=h.auth(key)))["id"] == user_id


async def test_revoked_key_is_refused_next_request(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url) as h:
        user_id, key = await h.user_with_key("mona")
        second = await _create_key(h, key, name="second")
        assert_ok(await h.client.get(ME, headers=h.auth(key)))

        key_id = assert_ok(await h.client.get(ME, headers=h.auth(key)))["key_id"]
        revoked = assert_ok(await h.client.delete(f"{KEYS}/{key_id}", headers=h.auth(second["key"])))
        assert revoked["id"] == key_id
        assert revoked["revoked_at"] is not None
        error = assert_error(await h.client.get(ME, headers=h.auth(key)), 401, "authentication_error")
        assert "revoked" in error["message"]

        # The owner's other key is untouched; revoking again changes nothing.
        assert assert_ok(await h.client.get(ME, headers=h.auth(second["key"])))["id"] == user_id
        again = assert_ok(await h.client.delete(f"{KEYS}/{key_id}", headers=ADMIN))
        assert again["revoked_at"] == revoked["revoked_at"]
        listed = {k["id"]: k for k in assert_ok(await h.client.get(KEYS, headers=h.auth(second["key"])))}
        assert listed[key_id]["revoked_at"] is not None
        assert listed[second["id"]]["revoked_at"] is None


async def test_expired_key_is_refused(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url) as h:
        _, key = await h.user_with_key("nora")
        expiring = (await _create_key(h, key, expires_in_days=1))["key"]
        assert_ok(await h.client.get(ME, headers=h.auth(expiring)))

        h.clock.advance(DAY - 1)
        assert_ok(await h.client.get(ME, headers=h.auth(expiring)))

        h.clock.advance(1)
        error = assert_error(await h.client.get(ME, headers=h.auth(expiring)), 401, "authentication_error")
        assert "expired" in error["message"]
        assert_ok(await h.client.get(ME, headers=h.auth(key)))  # a key without expiry lives on

        h.clock.advance(3650 * DAY)
        assert_ok(await h.client.get(ME, headers=h.auth(key)))
        assert_error(await h.client.get(ME, headers=h.auth(expiring)), 401, "authentication_error")


# --- ownership and permissions ---------------------------------------------------------------


async def test_other_users_key_is_404_and_keeps_working(harness: Harness) -> None:
    h = harness
    _, key_a = await h.user_with_key("olga")
    _, key_b = await h.user_with_key("pete")
    key_a_id = assert_ok(await h.client.get(ME, headers=h.auth(key_a)))["key_id"]

    missing = assert_error(
        await h.client.delete(f"{KEYS}/key_does_not_exist", headers=h.auth(key_b)), 404, "not_found_error"
    )
    foreign = assert_error(await h.client.delete(f"{KEYS}/{key_a_id}", headers=h.auth(key_b)), 404, "not_found_error")
    # A foreign id is indistinguishable from a missing one.
    assert foreign["message"] == missing["message"]
    assert_ok(await h.client.get(ME, headers=h.auth(key_a)))

    # B's listing never shows A's key.
    assert key_a_id not in {k["id"] for k in assert_ok(await h.client.get(KEYS, headers=h.auth(key_b)))}

    # An admin can revoke anyone's key.
    assert_ok(await h.client.delete(f"{KEYS}/{key_a_id}", headers=ADMIN))
    assert_error(await h.client.get(ME, headers=h.auth(key_a)), 401, "authentication_error")


async def test_listing_keys_of_another_user(harness: Harness) -> None:
    h = harness
    user_a, _ = await h.user_with_key("quin")
    user_b, key_b = await h.user_with_key("rose")
    error = assert_error(
        await h.client.get(KEYS, params={"user_id": user_a}, headers=h.auth(key_b)), 403, "authorization_error"
    )
    assert error["message"]
    own = assert_ok(await h.client.get(KEYS, params={"user_id": user_b}, headers=h.auth(key_b)))
    assert {k["owner_id"] for k in own} == {user_b}

    as_admin = assert_ok(await h.client.get(KEYS, params={"user_id": user_a}, headers=ADMIN))
    assert [k["owner_id"] for k in as_admin] == [user_a]
    everyone = assert_ok(await h.client.get(KEYS, headers=ADMIN))
    assert {user_a, user_b, h.admin.user_id} <= {k["owner_id"] for k in everyone}


async def test_non_admin_cannot_create_key_for_another_user(harness: Harness) -> None:
    user_a, _ = await harness.user_with_key("sam")
    _, key_b = await harness.user_with_key("tina")
    response = await harness.client.post(KEYS, headers=harness.auth(key_b), json={"name": "k", "user_id": user_a})
    assert_error(response, 403, "authorization_error")
    assert len(assert_ok(await harness.client.get(KEYS, params={"user_id": user_a}, headers=ADMIN))) == 1


async def test_read_scoped_key_cannot_write(harness: Harness) -> None:
    h = harness
    user_id = await h.create_user("uma")
    _, read_only = await h.create_key(user_id, scopes=["read"])
    assert assert_ok(await h.client.get(ME, headers=h.auth(read_only)))["scopes"] == ["read"]
    error = assert_error(
        await h.client.post(KEYS, headers=h.auth(read_only), json={"name": "k"}), 403, "authorization_error"
    )
    assert error["details"] == {"scope": "write"}
    key_id = assert_ok(await h.client.get(ME, headers=h.auth(read_only)))["key_id"]
    assert_error(await h.client.delete(f"{KEYS}/{key_id}", headers=h.auth(read_only)), 403, "authorization_error")
    assert_ok(await h.client.get(ME, headers=h.auth(read_only)))


async def test_viewer_cannot_create_keys_at_all(harness: Harness) -> None:
    _, key = await harness.user_with_key("vera", Role.VIEWER)
    response = await harness.client.post(KEYS, headers=harness.auth(key), json={"name": "k"})
    assert_error(response, 403, "authorization_error")


async def test_scopes_beyond_the_role_are_400(harness: Harness) -> None:
    h = harness
    viewer_id, _ = await h.user_with_key("walt", Role.VIEWER)
    response = await h.client.post(KEYS, headers=ADMIN, json={"name": "k", "user_id": viewer_id, "scopes": ["write"]})
    error = assert_error(response, 400, "validation_error")
    assert error["details"] == {
        "fields": [
            {
                "field": "scopes",
                "message": "not in the owner's role (viewer): write",
                "location": "body",
                "type": "value_error",
            }
        ],
        "scopes": ["write"],
    }

    _, dev_key = await h.user_with_key("xena", Role.DEVELOPER)
    response = await h.client.post(KEYS, headers=h.auth(dev_key), json={"name": "k", "scopes": ["read", "admin"]})
    error = assert_error(response, 400, "validation_error")
    assert error["details"]["scopes"] == ["admin"]
    assert field_names(error) == {"scopes"}

    # Within the role is fine, and duplicates collapse.
    ok = await _create_key(h, dev_key, scopes=["read", "ai", "read"])
    assert ok["scopes"] == ["ai", "read"]


@pytest.mark.parametrize(
    ("requested", "lacking"),
    [(None, ["admin", "ai"]), (["admin"], ["admin"]), (["ai"], ["ai"]), (["read", "write", "admin"], ["admin"])],
)
async def test_scoped_key_cannot_mint_a_broader_key(
    harness: Harness, requested: list[str] | None, lacking: list[str]
) -> None:
    """Scopes narrow a credential; a narrowed key must not be able to create an un-narrowed one."""
    h = harness
    _, narrow = await h.create_key(h.admin.user_id, scopes=["read", "write"])
    body: dict[str, Any] = {"name": "escalate"}
    if requested is not None:
        body["scopes"] = requested
    before = len(assert_ok(await h.client.get(KEYS, headers=ADMIN)))
    error = assert_error(await h.client.post(KEYS, headers=h.auth(narrow), json=body), 403, "authorization_error")
    assert error["details"] == {"scopes": lacking}
    assert len(assert_ok(await h.client.get(KEYS, headers=ADMIN))) == before

    # Within its own scopes it may still create keys.
    created = await _create_key(h, narrow, scopes=["read"])
    assert assert_ok(await h.client.get(ME, headers=h.auth(created["key"])))["scopes"] == ["read"]


async def test_admin_key_without_admin_scope_is_not_admin(harness: Harness) -> None:
    h = harness
    _, narrow = await h.create_key(h.admin.user_id, scopes=["read", "write"])
    assert_error(await h.client.get("/api/v1/users", headers=h.auth(narrow)), 403, "authorization_error")
    other_id, other_key = await h.user_with_key("yuri")
    other_key_id = assert_ok(await h.client.get(ME, headers=h.auth(other_key)))["key_id"]
    assert_error(await h.client.delete(f"{KEYS}/{other_key_id}", headers=h.auth(narrow)), 404, "not_found_error")
    assert_error(
        await h.client.get(KEYS, params={"user_id": other_id}, headers=h.auth(narrow)), 403, "authorization_error"
    )
    assert_ok(await h.client.get(ME, headers=h.auth(other_key)))
