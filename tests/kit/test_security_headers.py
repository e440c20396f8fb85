"""Security headers from the request edge, and CORS only when configured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import ADMIN_KEY, Harness

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def test_nosniff_everywhere_and_no_store_on_api_answers(harness: Harness) -> None:
    for path in ("/health", "/openapi.json", "/metrics", "/no-such-page", "/api/v1/auth/me", "/api/nope"):
        response = await harness.client.get(path, headers=AUTH)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert ("no-store" in response.headers.get("Cache-Control", "")) is path.startswith("/api/"), path


async def test_secrets_are_never_cached(harness: Harness) -> None:
    await harness.create_user("olga", password="correct-horse-battery")
    token = await harness.client.post(
        "/api/v1/auth/token", json={"username": "olga", "password": "correct-horse-battery"}
    )
    assert token.status_code == 200, token.text
    assert token.headers["Cache-Control"] == "no-store"
    key = await harness.client.post("/api/v1/keys", json={"name": "laptop"}, headers=AUTH)
    assert key.status_code == 201, key.text
    assert key.json()["data"]["key"]
    assert key.headers["Cache-Control"] == "no-store"


async def test_html_pages_cannot_be_framed(harness: Harness) -> None:
    for path in ("/docs", "/redoc"):
        response = await harness.client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["X-Frame-Options"] == "DENY"
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        assert "default-src 'none'" in policy
    # JSON answers do not carry the HTML policy.
    assert "Content-Security-Policy" not in (await harness.client.get("/health")).headers


PREFLIGHT = {
    "Origin": "http://localhost:5173",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


async def test_cors_is_off_by_default(harness: Harness) -> None:
    preflight = await harness.client.options("/api/context", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    simple = await harness.client.get("/api/v1/auth/me", headers={**AUTH, "Origin": "http://localhost:5173"})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allowlist_answers_preflights(make_harness: Callable[..., Any]) -> None:
    async with make_harness(cors_origins=["http://localhost:5173"]) as h:
        preflight = await h.client.options("/api/context", headers=PREFLIGHT)
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        simple = await h.client.get("/api/v1/auth/me", headers={**AUTH, "Origin": "http://localhost:5173"})
        assert simple.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "X-Request-ID" in simple.headers["access-control-expose-headers"]
        stranger = await h.client.options("/api/context", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers
