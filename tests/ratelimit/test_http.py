"""Rate limiting as HTTP clients see it: headers, the 429 envelope, login, budgets, Redis down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pytest
from fastapi import Depends

from tests.conftest import ADMIN_KEY, REDIS_URL, Harness
from trellis.auth.deps import guard
from trellis.auth.schemas import Principal, Scope
from trellis.settings import RouteClass

ME = "/api/v1/auth/me"
TOKEN = "/api/v1/auth/token"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SMALL_ADMIN = {"admin": {"default": {"capacity": 3, "period_seconds": 30}}}
UNREACHABLE = "redis://127.0.0.1:1/0"


async def test_success_carries_ratelimit_headers(make_harness: Callable[..., Any]) -> None:
    async with make_harness(rate_limits=SMALL_ADMIN) as h:
        seen = []
        for _ in range(3):
            response = await h.client.get(ME, headers=ADMIN)
            assert response.status_code == 200, response.text
            assert response.headers["RateLimit-Policy"] == '"default";q=3;w=30'
            assert "Retry-After" not in response.headers
            seen.append(response.headers["RateLimit"])
        # 10 s per cell: the bucket is full again 10, 20, 30 s after each request.
        assert seen == ['"default";r=2;t=10', '"default";r=1;t=20', '"default";r=0;t=30']


async def test_429_envelope_and_headers(make_harness: Callable[..., Any]) -> None:
    async with make_harness(rate_limits=SMALL_ADMIN) as h:
        for _ in range(3):
            assert (await h.client.get(ME, headers=ADMIN)).status_code == 200
        response = await h.client.get(ME, headers=ADMIN)
        assert response.status_code == 429, response.text
        body = response.json()
        assert body["success"] is False
        assert body["data"] is None
        assert body["error"]["code"] == "rate_limit_error"
        assert body["error"]["details"] == {"policy": "default", "limit": 3, "retry_after_seconds": 10.0}
        assert response.headers["Retry-After"] == "10"
        assert response.headers["RateLimit-Policy"] == '"default";q=3;w=30'
        assert response.headers["RateLimit"] == '"default";r=0;t=30'


async def test_clock_refill_over_http(make_harness: Callable[..., Any]) -> None:
    """The harness clock drives the in-process limiter: 10 s later exactly one more request passes."""
    async with make_harness(rate_limits=SMALL_ADMIN) as h:
        for _ in range(3):
            assert (await h.client.get(ME, headers=ADMIN)).status_code == 200
        assert (await h.client.get(ME, headers=ADMIN)).status_code == 429
        h.clock.advance(9.5)
        refused = await h.client.get(ME, headers=ADMIN)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        h.clock.advance(0.5)
        assert (await h.client.get(ME, headers=ADMIN)).status_code == 200
        assert (await h.client.get(ME, headers=ADMIN)).status_code == 429


async def test_login_has_its_own_stricter_budget(make_harness: Callable[..., Any]) -> None:
    async with make_harness(login_rate_limit={"capacity": 3, "period_seconds": 60}) as h:
        await h.create_user("carol", password="correct-horse-battery")
        for attempt in range(3):
            response = await h.client.post(TOKEN, json={"username": "carol", "password": "wrong-password"})
            assert response.status_code == 401, (attempt, response.text)
            assert response.json()["error"]["code"] == "authentication_error"
        # Failed attempts count: the 4th is refused before the password is even looked at.
        fourth = await h.client.post(TOKEN, json={"username": "carol", "password": "wrong-password"})
        assert fourth.status_code == 429, fourth.text
        assert fourth.json()["error"]["code"] == "rate_limit_error"
        assert fourth.json()["error"]["details"]["policy"] == "login"
        assert fourth.headers["RateLimit-Policy"] == '"login";q=3;w=60'
        assert fourth.headers["Retry-After"] == "20"
        # ...and so is the right password, until the budget refills.
        right = await h.client.post(TOKEN, json={"username": "carol", "password": "correct-horse-battery"})
        assert right.status_code == 429

        # The API key budget is separate and untouched.
        me = await h.client.get(ME, headers=ADMIN)
        assert me.status_code == 200, me.text
        assert me.headers["RateLimit"].startswith('"default";r=1199;')

        h.clock.advance(20)
        again = await h.client.post(TOKEN, json={"username": "carol", "password": "correct-horse-battery"})
        assert again.status_code == 200, again.text
        assert again.json()["data"]["access_token"]


async def test_login_ignores_forwarded_for_without_trusted_proxies(make_harness: Callable[..., Any]) -> None:
    """The probe's finding: after a 429, each new X-Forwarded-For got fresh attempts, and a right password."""
    async with make_harness(login_rate_limit={"capacity": 3, "period_seconds": 60}) as h:
        await h.create_user("carol", password="correct-horse-battery")
        for _ in range(3):
            assert (await h.client.post(TOKEN, json={"username": "mallory", "password": "x" * 8})).status_code == 401
        for address in ("10.0.0.1", "10.0.0.2", "192.168.1.7"):
            spoofed = await h.client.post(
                TOKEN,
                json={"username": "carol", "password": "correct-horse-battery"},
                headers={"X-Forwarded-For": address},
            )
            assert spoofed.status_code == 429, spoofed.text


async def test_login_budget_per_username_across_addresses(make_harness: Callable[..., Any]) -> None:
    """Behind a trusted proxy each address has its budget, and so does each username."""
    async with make_harness(login_rate_limit={"capacity": 3, "period_seconds": 60}, trusted_proxies=["127.0.0.1"]) as h:
        await h.create_user("carol", password="correct-horse-battery")
        for n in range(3):
            wrong = await h.client.post(
                TOKEN,
                json={"username": "carol", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"10.0.0.{n}"},
            )
            assert wrong.status_code == 401, wrong.text
        # A fourth address gets no fresh guesses at carol's password (nor does another spelling)...
        for username in ("carol", "CAROL"):
            refused = await h.client.post(
                TOKEN,
                json={"username": username, "password": "correct-horse-battery"},
                headers={"X-Forwarded-For": "10.0.0.99"},
            )
            assert refused.status_code == 429, refused.text
        # ...while that address may still log in as someone else: its own budget is not spent.
        await h.create_user("dana", password="correct-horse-battery")
        other = await h.client.post(
            TOKEN,
            json={"username": "dana", "password": "correct-horse-battery"},
            headers={"X-Forwarded-For": "10.0.0.99"},
        )
        assert other.status_code == 200, other.text


async def test_login_budget_per_forwarded_address(make_harness: Callable[..., Any]) -> None:
    async with make_harness(login_rate_limit={"capacity": 3, "period_seconds": 60}, trusted_proxies=["127.0.0.1"]) as h:
        from_one = {"X-Forwarded-For": "10.0.0.1"}
        for n in range(3):
            attempt = await h.client.post(TOKEN, json={"username": f"user{n}", "password": "x" * 8}, headers=from_one)
            assert attempt.status_code == 401, attempt.text
        assert (
            await h.client.post(TOKEN, json={"username": "user9", "password": "x" * 8}, headers=from_one)
        ).status_code == 429
        from_two = {"X-Forwarded-For": "10.0.0.2"}
        assert (
            await h.client.post(TOKEN, json={"username": "user9", "password": "x" * 8}, headers=from_two)
        ).status_code == 401


async def test_api_requests_do_not_spend_the_login_budget(make_harness: Callable[..., Any]) -> None:
    async with make_harness(login_rate_limit={"capacity": 1, "period_seconds": 60}) as h:
        await h.create_user("dave", password="correct-horse-battery")
        for _ in range(5):
            assert (await h.client.get(ME, headers=ADMIN)).status_code == 200
        ok = await h.client.post(TOKEN, json={"username": "dave", "password": "correct-horse-battery"})
        assert ok.status_code == 200, ok.text
        assert ok.headers["RateLimit"] == '"login";r=0;t=60'


async def test_every_credential_of_a_user_spends_the_users_budget(make_harness: Callable[..., Any]) -> None:
    """The probe's finding: a limited user created more keys and got a fresh budget on each."""
    limits = {"developer": {"default": {"capacity": 3, "period_seconds": 3600}}}
    async with make_harness(rate_limits=limits) as h:
        user_id = await h.create_user("erin", password="correct-horse-battery")
        _, first = await h.create_key(user_id, name="laptop")
        codes_first = [(await h.client.get(ME, headers=Harness.auth(first))).status_code for _ in range(4)]
        assert codes_first == [200, 200, 200, 429]
        # New keys, and a JWT, share the spent budget.
        _, second = await h.create_key(user_id, name="ci")
        _, third = await h.create_key(user_id, name="spare")
        assert (await h.client.get(ME, headers=Harness.auth(second))).status_code == 429
        assert (await h.client.get(ME, headers=Harness.auth(third))).status_code == 429
        login = await h.client.post(TOKEN, json={"username": "erin", "password": "correct-horse-battery"})
        assert login.status_code == 200, login.text
        token = login.json()["data"]["access_token"]
        assert (await h.client.get(ME, headers=Harness.auth(token))).status_code == 429
        # A key of another user, and the admin, are unaffected.
        _, other = await h.user_with_key("frank")
        assert (await h.client.get(ME, headers=Harness.auth(other))).status_code == 200
        assert (await h.client.get(ME, headers=ADMIN)).status_code == 200


async def test_route_classes_have_separate_budgets(make_harness: Callable[..., Any]) -> None:
    limits = {
        "developer": {
            "default": {"capacity": 2, "period_seconds": 3600},
            "ai": {"capacity": 3, "period_seconds": 60},
        }
    }
    async with make_harness(rate_limits=limits) as h:
        # No AI routes exist yet: mount one guarded like they will be.
        async def ai_route(principal: Annotated[Principal, Depends(guard(Scope.AI, RouteClass.AI))]) -> dict[str, str]:
            return {"user": principal.username}

        h.app.add_api_route("/api/v1/test-ai", ai_route, methods=["GET"])
        _, key = await h.user_with_key("grace")
        _, other_key = await h.user_with_key("heidi")
        auth = Harness.auth(key)
        assert [(await h.client.get(ME, headers=auth)).status_code for _ in range(3)] == [200, 200, 429]

        # The default budget is spent; the AI budget is whole and has its own policy.
        ai = [await h.client.get("/api/v1/test-ai", headers=auth) for _ in range(4)]
        assert [r.status_code for r in ai] == [200, 200, 200, 429]
        assert ai[0].headers["RateLimit-Policy"] == '"ai";q=3;w=60'
        assert ai[0].headers["RateLimit"] == '"ai";r=2;t=20'
        assert ai[3].json()["error"]["details"]["policy"] == "ai"
        assert ai[3].headers["Retry-After"] == "20"

        # Per user: another developer's AI budget is untouched.
        assert (await h.client.get("/api/v1/test-ai", headers=Harness.auth(other_key))).status_code == 200


async def test_rate_limiting_can_be_disabled(make_harness: Callable[..., Any]) -> None:
    async with make_harness(rate_limits=SMALL_ADMIN, rate_limit_enabled=False) as h:
        for _ in range(10):
            response = await h.client.get(ME, headers=ADMIN)
            assert response.status_code == 200
            assert "RateLimit" not in response.headers


async def test_redis_backed_limiter_over_http(make_harness: Callable[..., Any], redis_prefix: str) -> None:
    """With TRELLIS_REDIS_URL set, the app limits through real Redis under its key prefix."""
    async with make_harness(redis_url=REDIS_URL, redis_key_prefix=redis_prefix, rate_limits=SMALL_ADMIN) as h:
        try:
            codes = [(await h.client.get(ME, headers=ADMIN)).status_code for _ in range(5)]
            assert codes == [200, 200, 200, 429, 429]
            assert h.runtime.redis is not None
            keys = [k async for k in h.runtime.redis.scan_iter(match=f"{redis_prefix}*")]
            assert len(keys) == 1
            assert keys[0].decode().startswith(f"{redis_prefix}rl:default:user:")
        finally:
            assert h.runtime.redis is not None
            keys = [k async for k in h.runtime.redis.scan_iter(match=f"{redis_prefix}*")]
            if keys:
                await h.runtime.redis.delete(*keys)


@pytest.mark.parametrize(("fail_open", "status"), [(False, 503), (True, 200)])
async def test_unreachable_redis_over_http(make_harness: Callable[..., Any], fail_open: bool, status: int) -> None:
    async with make_harness(redis_url=UNREACHABLE, rate_limit_fail_open=fail_open, redis_timeout_seconds=0.2) as h:
        response = await h.client.get(ME, headers=ADMIN)
        assert response.status_code == status, response.text
        body = response.json()
        if fail_open:
            assert body["success"] is True
            assert body["data"]["username"] == "admin"
        else:
            assert body["success"] is False
            assert body["error"]["code"] == "unavailable_error"
            assert body["error"]["details"] == {"component": "redis"}
            assert response.headers["Retry-After"] == "1"
