"""Every error class answers in the seed's envelope with its status and code, on real routes."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from tests.conftest import Harness
from trellis.settings import Role


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "data", "error", "timestamp", "request_id"}
    assert body["success"] is False
    assert body["data"] is None
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])
    assert body["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


async def test_success_envelope(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.get("/api/v1/auth/me", headers=admin_headers)
    body = response.json()
    assert body["success"] is True
    assert body["error"] is None
    assert body["request_id"] == response.headers["x-request-id"]


async def test_validation_error_lists_failing_fields(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.post(
        "/api/v1/users", headers=admin_headers, json={"username": "x", "role": "emperor", "extra": 1}
    )
    error = assert_error(response, 400, "validation_error")
    fields = {f["field"] for f in error["details"]["fields"]}
    assert fields == {"username", "role", "extra"}


async def test_wrong_types_and_missing_fields(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.post("/api/v1/keys", headers=admin_headers, json={"expires_in_days": "soon"})
    error = assert_error(response, 400, "validation_error")
    fields = {f["field"]: f["type"] for f in error["details"]["fields"]}
    assert fields["name"] == "missing"
    # Strict: a string is not a number, even one that spells it (see the next test).
    assert fields["expires_in_days"] == "int_type"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/db/vectors/collections", {"name": "c", "dimensions": "3"}, "dimensions"),
        ("/api/v1/keys", {"name": "k", "expires_in_days": "30"}, "expires_in_days"),
        (
            "/api/context",
            {
                "type": "note",
                "content": "x",
                "relationships": [{"target_context_id": "ctx_x", "relationship_type": "r", "strength": "0.5"}],
            },
            "relationships.0.strength",
        ),
        ("/api/v1/ai/generate", {"prompt": "hi", "max_tokens": "5"}, "max_tokens"),
        ("/api/v1/ai/generate", {"prompt": "hi", "stream": 1}, "stream"),
        ("/api/v1/users", {"username": "someone", "role": "developer", "password": 12345678}, "password"),
    ],
)
async def test_request_bodies_do_not_coerce_types(
    harness: Harness, admin_headers: dict[str, str], path: str, body: dict[str, object], field: str
) -> None:
    """The probe's finding: "dimensions": "3" was accepted as 3."""
    error = assert_error(await harness.client.post(path, headers=admin_headers, json=body), 400, "validation_error")
    assert field in {f["field"] for f in error["details"]["fields"]}, error
    # Enums still take their JSON values.
    ok = await harness.client.post("/api/v1/keys", headers=admin_headers, json={"name": "k", "scopes": ["read"]})
    assert ok.status_code == 201, ok.text


async def test_body_that_is_not_an_object(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.post("/api/v1/keys", headers=admin_headers, json=["a", "list"])
    assert_error(response, 400, "validation_error")


async def test_malformed_json(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.post(
        "/api/v1/keys", headers={**admin_headers, "content-type": "application/json"}, content=b'{"name": '
    )
    error = assert_error(response, 400, "validation_error")
    assert "JSON" in error["message"]
    # The whole body is wrong, not a field; the position is the character offset of the error.
    assert error["details"]["fields"] == [
        {"field": "", "location": "body", "message": "JSON decode error", "type": "json_invalid", "position": 9}
    ]


async def test_authentication_error(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/auth/me")
    assert_error(response, 401, "authentication_error")
    assert response.headers["www-authenticate"] == "Bearer"
    response = await harness.client.get("/api/v1/auth/me", headers={"X-API-Key": "trl_not-a-real-key-at-all"})
    assert_error(response, 401, "authentication_error")


async def test_authorization_error(harness: Harness) -> None:
    _, key = await harness.user_with_key("viewer1", Role.VIEWER)
    response = await harness.client.get("/api/v1/users", headers=harness.auth(key))
    assert_error(response, 403, "authorization_error")


async def test_not_found_error_for_unknown_id(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.delete("/api/v1/keys/key_doesnotexist", headers=admin_headers)
    error = assert_error(response, 404, "not_found_error")
    assert error["details"] == {"id": "key_doesnotexist"}


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/nothing-here"), ("POST", "/api/v1/nope/deeper")])
async def test_unknown_api_route_in_envelope(harness: Harness, method: str, path: str) -> None:
    response = await harness.client.request(method, path)
    assert_error(response, 404, "not_found_error")


async def test_method_not_allowed_in_envelope(harness: Harness) -> None:
    response = await harness.client.put("/api/v1/auth/me")
    assert_error(response, 405, "method_not_allowed_error")


async def test_conflict_error(harness: Harness, admin_headers: dict[str, str]) -> None:
    body = {"username": "twin", "password": "long enough password"}
    assert (await harness.client.post("/api/v1/users", headers=admin_headers, json=body)).status_code == 201
    response = await harness.client.post("/api/v1/users", headers=admin_headers, json=body)
    assert_error(response, 409, "conflict_error")


async def test_payload_too_large_by_content_length(make_harness: Any, admin_headers: dict[str, str]) -> None:
    async with make_harness(max_body_bytes=100) as h:
        response = await h.client.post("/api/v1/keys", headers=admin_headers, json={"name": "x" * 200})
        error = assert_error(response, 413, "payload_too_large_error")
        assert error["details"]["max_bytes"] == 100
        # Nothing was created.
        keys = (await h.client.get("/api/v1/keys", headers=admin_headers)).json()["data"]
        assert [k["name"] for k in keys] == ["bootstrap admin key"]


async def test_payload_too_large_when_streamed_without_length(make_harness: Any, admin_headers: dict[str, str]) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b'{"name": "' + b"x" * 50

    async with make_harness(max_body_bytes=100) as h:
        response = await h.client.post(
            "/api/v1/keys", headers={**admin_headers, "content-type": "application/json"}, content=chunks()
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large_error")


async def test_rate_limit_error(make_harness: Any, admin_headers: dict[str, str]) -> None:
    async with make_harness(rate_limits={"admin": {"default": {"capacity": 1, "period_seconds": 60}}}) as h:
        assert (await h.client.get("/api/v1/auth/me", headers=admin_headers)).status_code == 200
        response = await h.client.get("/api/v1/auth/me", headers=admin_headers)
        assert_error(response, 429, "rate_limit_error")
        assert int(response.headers["retry-after"]) >= 1


async def test_internal_error_reveals_nothing(harness: Harness) -> None:
    router = APIRouter()

    @router.get("/api/v1/explode")
    async def explode() -> None:
        raise RuntimeError("secret internals: password=hunter2 at /srv/app.py line 7")

    harness.app.include_router(router)
    response = await harness.client.get("/api/v1/explode")
    error = assert_error(response, 500, "internal_error")
    assert error["message"] == "Internal server error"
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert "app.py" not in response.text


async def test_unavailable_error(make_harness: Any, admin_headers: dict[str, str]) -> None:
    # Redis that cannot be reached with the limiter set to fail closed: 503, not a hang or a 500.
    async with make_harness(redis_url="redis://127.0.0.1:1/0", rate_limit_fail_open=False) as h:
        response = await h.client.get("/api/v1/auth/me", headers=admin_headers)
        error = assert_error(response, 503, "unavailable_error")
        assert error["details"] == {"component": "redis"}
        assert response.headers["retry-after"] == "1"


async def test_errors_outside_api_are_enveloped_too(harness: Harness) -> None:
    """The probe's finding: unknown paths outside /api and 405s on /health answered {"detail": ...}."""
    for method, path, status, code in (
        ("GET", "/no-such-page", 404, "not_found_error"),
        ("POST", "/health", 405, "method_not_allowed_error"),
        ("DELETE", "/openapi.json", 405, "method_not_allowed_error"),
    ):
        response = await harness.client.request(method, path)
        assert response.status_code == status, (path, response.text)
        body = response.json()
        assert set(body) == {"success", "data", "error", "timestamp", "request_id"}, body
        assert body["error"]["code"] == code
    assert "GET" in (await harness.client.post("/health")).headers["allow"]


async def test_options_and_405_list_every_method_of_the_path(harness: Harness, admin_headers: dict[str, str]) -> None:
    """The probe's finding: OPTIONS /api/v1/db/vectors/collections/{name} answered Allow: GET though DELETE exists."""
    options = await harness.client.options("/api/v1/db/vectors/collections/mine", headers=admin_headers)
    assert options.status_code == 204, options.text
    allowed = {m.strip() for m in options.headers["allow"].split(",")}
    assert {"GET", "DELETE"} <= allowed
    wrong = await harness.client.patch("/api/v1/db/vectors/collections/mine", headers=admin_headers)
    assert_error(wrong, 405, "method_not_allowed_error")
    assert {m.strip() for m in wrong.headers["allow"].split(",")} >= {"GET", "DELETE"}
    items = await harness.client.options("/api/v1/db/vectors/collections/mine/items", headers=admin_headers)
    assert {m.strip() for m in items.headers["allow"].split(",")} >= {"PUT", "POST"}
