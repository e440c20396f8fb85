"""Dashboard sessions over HTTP (httpx, in process): sign-in with a key or a password, the cookie's
flags, CSRF on the sign-in form, on sign-out and on every change made through the REST API with the
cookie, redirects without a session, and the session ending with its credential."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import event

from tests.auth.test_cache import change_arrives
from tests.conftest import ADMIN_KEY, REDIS_URL, Harness
from trellis.auth.schemas import Scope
from trellis.dashboard.service import CSRF_HEADER, SESSION_COOKIE, SIGN_IN_COOKIE, derive_csrf
from trellis.kit.errors import AuthenticationFailed
from trellis.runtime import build_runtime
from trellis.settings import Role, Settings

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def form_token(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, html[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    """Open the sign-in page (it sets the pre-session cookie), then post the form with its token."""
    page = await client.get("/dashboard/sign-in")
    assert page.status_code == 200
    body = {"csrf_token": form_token(page.text), "method": "key", **fields}
    return await client.post("/dashboard/sign-in", data=body)


async def session_csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/dashboard")
    assert page.status_code == 200, page.text[:300]
    found = CSRF_META.search(page.text)
    assert found
    return found.group(1)


def browser(h: Harness, base_url: str = "http://trellis.test") -> httpx.AsyncClient:
    """A browser of its own (a cookie jar) on the harness's app."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url=base_url)


def set_cookie(response: httpx.Response, name: str) -> str:
    headers = [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie" and v.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers
    return headers[0]


@pytest.fixture
async def client(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own: a cookie jar, on the harness's app."""
    async with browser(h) as c:
        yield c


async def test_a_page_without_a_session_redirects_to_sign_in_with_the_way_back(h: Harness, client: Any) -> None:
    response = await client.get("/dashboard/logs?q=rain&status=ok")
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/dashboard/sign-in"
    assert parse_qs(location.query)["next"] == ["/dashboard/logs?q=rain&status=ok"]
    for path in ("/dashboard", "/dashboard/models", "/dashboard/contexts/ctx_x", "/dashboard/workflows/runs/run_x"):
        assert (await client.get(path)).status_code == 303, path
    # A cookie that names no session is no session.
    client.cookies.set(SESSION_COOKIE, "dss_forged-value")
    assert (await client.get("/dashboard")).status_code == 303


async def test_signing_in_with_an_api_key_sets_a_strict_cookie_and_goes_back(h: Harness, client: Any) -> None:
    page = await client.get("/dashboard/sign-in?next=/dashboard/logs%3Fq%3Drain")
    pre = set_cookie(page, SIGN_IN_COOKIE)
    for flag in ("HttpOnly", "SameSite=strict", "Path=/dashboard"):
        assert flag in pre
    response = await client.post(
        "/dashboard/sign-in",
        data={
            "csrf_token": form_token(page.text),
            "method": "key",
            "api_key": ADMIN_KEY,
            "next": "/dashboard/logs?q=rain",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/logs?q=rain"
    assert ADMIN_KEY not in response.headers["location"]
    cookie = set_cookie(response, SESSION_COOKIE)
    for flag in ("HttpOnly", "SameSite=lax", "Path=/"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    token = client.cookies[SESSION_COOKIE]
    assert token.startswith("dss_")
    assert ADMIN_KEY not in token
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert "admin" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert ADMIN_KEY not in page.text  # the key is in no page either
    assert CSRF_META.search(page.text).group(1) == derive_csrf(token)  # type: ignore[union-attr]


async def test_the_cookie_is_secure_over_https(h: Harness) -> None:
    async with browser(h, "https://trellis.test") as c:
        response = await sign_in(c, api_key=ADMIN_KEY)
        assert response.status_code == 303
        assert "Secure" in set_cookie(response, SESSION_COOKIE)


async def test_signing_in_with_a_password(h: Harness, client: Any) -> None:
    await h.create_user("carol", Role.VIEWER, password="correct horse battery")
    wrong = await sign_in(client, method="password", username="carol", password="wrong password!")
    assert wrong.status_code == 401
    assert "Invalid username or password" in wrong.text
    assert SESSION_COOKIE not in client.cookies
    right = await sign_in(client, method="password", username="carol", password="correct horse battery")
    assert right.status_code == 303
    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["data"]["username"] == "carol"
    assert me.json()["data"]["scopes"] == ["read"]


async def test_a_wrong_or_missing_key_is_refused_on_the_form(h: Harness, client: Any) -> None:
    wrong = await sign_in(client, api_key="trl_not-a-key")
    assert wrong.status_code == 401
    assert "Invalid API key" in wrong.text
    empty = await sign_in(client, api_key="  ")
    assert empty.status_code == 401
    assert "Enter an API key" in empty.text
    assert SESSION_COOKIE not in client.cookies


async def test_a_forged_or_missing_sign_in_token_is_403(h: Harness, client: Any) -> None:
    await client.get("/dashboard/sign-in")
    forged = await client.post(
        "/dashboard/sign-in", data={"csrf_token": "forged", "method": "key", "api_key": ADMIN_KEY}
    )
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    assert SESSION_COOKIE not in client.cookies
    # Another site's form cannot carry the pre-session cookie (SameSite=strict): no cookie, no entry.
    async with browser(h) as other:
        response = await other.post(
            "/dashboard/sign-in", data={"csrf_token": derive_csrf("dsi_guess"), "method": "key", "api_key": ADMIN_KEY}
        )
        assert response.status_code == 403
        assert SESSION_COOKIE not in other.cookies


@pytest.mark.parametrize(
    ("next_value", "expected"),
    [
        ("https://evil.example/dashboard", "/dashboard"),
        ("//evil.example/dashboard", "/dashboard"),
        ("/api/v1/users", "/dashboard"),
        ("/dashboard/sign-in", "/dashboard"),
        ("/dashboard/contexts?query=x", "/dashboard/contexts?query=x"),
    ],
)
async def test_the_way_back_never_leaves_the_dashboard(h: Harness, client: Any, next_value: str, expected: str) -> None:
    response = await sign_in(client, api_key=ADMIN_KEY, next=next_value)
    assert response.status_code == 303
    assert response.headers["location"] == expected


async def test_changes_through_the_api_with_the_cookie_need_the_csrf_token(h: Harness, client: Any) -> None:
    await sign_in(client, api_key=ADMIN_KEY)
    csrf = await session_csrf(client)
    body = {"type": "note", "content": "made from the dashboard"}
    missing = await client.post("/api/context", json=body)
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "authorization_error"
    assert CSRF_HEADER in missing.json()["error"]["message"]
    forged = await client.post("/api/context", json=body, headers={CSRF_HEADER: derive_csrf("dss_another-session")})
    assert forged.status_code == 403
    listed = await client.get("/api/context")
    assert listed.status_code == 200
    assert listed.json()["data"]["items"] == []  # nothing was written by the refused requests
    made = await client.post("/api/context", json=body, headers={CSRF_HEADER: csrf})
    assert made.status_code == 201, made.text
    # Reads need no token.
    assert (await client.get(f"/api/context/{made.json()['data']['id']}")).status_code == 200


async def test_a_session_has_its_keys_scopes_and_its_owners_view(h: Harness, client: Any) -> None:
    alice_id = await h.create_user("alice")
    _, read_only = await h.create_key(alice_id, scopes=[Scope.READ])
    admin_context = await h.client.post(
        "/api/context", json={"type": "note", "content": "the admin's"}, headers=h.auth(ADMIN_KEY)
    )
    await sign_in(client, api_key=read_only)
    csrf = await session_csrf(client)
    # The key's scopes: read only, so a change is refused even with the right token.
    refused = await client.post("/api/context", json={"type": "note", "content": "x"}, headers={CSRF_HEADER: csrf})
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == {"scope": "write"}
    # The owner's view: another user's context is a 404, system metrics are for administrators.
    other = await client.get(f"/api/context/{admin_context.json()['data']['id']}")
    assert other.status_code == 404
    assert (await client.get("/api/v1/metrics/system")).status_code == 403
    page = await client.get("/dashboard")
    assert 'data-admin="false"' in page.text


async def test_sign_out_needs_the_token_and_ends_the_session_everywhere(h: Harness, client: Any) -> None:
    await sign_in(client, api_key=ADMIN_KEY)
    token = client.cookies[SESSION_COOKIE]
    csrf = await session_csrf(client)
    forged = await client.post("/dashboard/sign-out", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert (await client.get("/dashboard")).status_code == 200  # still signed in
    out = await client.post("/dashboard/sign-out", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert out.headers["location"] == "/dashboard/sign-in"
    assert SESSION_COOKIE not in client.cookies
    # The old cookie, replayed (as a copy of it would be), opens nothing.
    async with browser(h) as replay:
        replay.cookies.set(SESSION_COOKIE, token)
        assert (await replay.get("/dashboard")).status_code == 303
        me = await replay.get("/api/v1/auth/me")
        assert me.status_code == 401
        assert "sign in again" in me.json()["error"]["message"]


async def test_revoking_the_key_or_disabling_the_user_ends_the_session(h: Harness, client: Any) -> None:
    user_id = await h.create_user("dave")
    key_id, key = await h.create_key(user_id)
    await sign_in(client, api_key=key)
    assert (await client.get("/api/v1/auth/me")).status_code == 200
    await h.client.delete(f"/api/v1/keys/{key_id}", headers=h.auth(ADMIN_KEY))
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    assert (await client.get("/dashboard")).status_code == 303

    await h.create_user("erin", password="erin's password")
    async with browser(h) as erin:
        assert (await sign_in(erin, method="password", username="erin", password="erin's password")).status_code == 303
        assert (await erin.get("/dashboard")).status_code == 200
        erin_id = (await erin.get("/api/v1/auth/me")).json()["data"]["id"]
        await h.client.post(f"/api/v1/users/{erin_id}/disable", headers=h.auth(ADMIN_KEY))
        assert (await erin.get("/dashboard")).status_code == 303


async def test_a_session_expires(make_harness: Callable[..., Any]) -> None:
    async with make_harness(dashboard={"session_ttl_seconds": 600}) as h, browser(h) as c:
        await sign_in(c, api_key=ADMIN_KEY)
        h.clock.advance(599)
        assert (await c.get("/dashboard")).status_code == 200
        h.clock.advance(2)
        assert (await c.get("/dashboard")).status_code == 303
        expired = await c.get("/api/v1/auth/me")
        assert expired.status_code == 401
        assert "expired" in expired.json()["error"]["message"]


async def test_sign_in_spends_the_login_budget(make_harness: Callable[..., Any]) -> None:
    async with make_harness(login_rate_limit={"capacity": 2, "period_seconds": 60}) as h, browser(h) as c:
        assert (await sign_in(c, api_key="trl_wrong-1")).status_code == 401
        assert (await sign_in(c, api_key="trl_wrong-2")).status_code == 401
        limited = await sign_in(c, api_key=ADMIN_KEY)
        assert limited.status_code == 429
        assert SESSION_COOKIE not in c.cookies


async def test_static_files_are_served_from_the_package(h: Harness, client: Any) -> None:
    for name in ("common.js", "overview.js", "dashboard.css"):
        response = await client.get(f"/dashboard/static/{name}")
        assert response.status_code == 200, name
    assert (await client.get("/dashboard/static/nope.js")).status_code == 404


async def test_a_disabled_dashboard_serves_nothing_and_its_cookie_opens_nothing(
    make_harness: Callable[..., Any],
) -> None:
    async with make_harness() as h, browser(h) as c:
        await sign_in(c, api_key=ADMIN_KEY)
        token = c.cookies[SESSION_COOKIE]
    async with make_harness(dashboard={"enabled": False}) as h, browser(h) as c:
        assert (await c.get("/dashboard")).status_code == 404
        assert (await c.get("/dashboard/static/common.js")).status_code == 404
        c.cookies.set(SESSION_COOKIE, token)
        assert (await c.get("/api/v1/auth/me")).status_code == 401


@pytest.mark.parametrize(
    ("path", "script"),
    [
        ("/dashboard", "overview.js"),
        ("/dashboard/models", "models.js"),
        ("/dashboard/logs", "logs.js"),
        ("/dashboard/logs/log_x", "log.js"),
        ("/dashboard/contexts", "contexts.js"),
        ("/dashboard/contexts/ctx_x", "context.js"),
        ("/dashboard/workflows", "workflows.js"),
        ("/dashboard/workflows/runs/run_x", "run.js"),
        ("/dashboard/alerts", "alerts.js"),
    ],
)
async def test_every_page_renders_its_frame_for_a_session(harness: Harness, path: str, script: str) -> None:
    async with browser(harness) as c:
        await sign_in(c, api_key=ADMIN_KEY)
        page = await c.get(path)
        assert page.status_code == 200
        assert f'<script src="/dashboard/static/{script}"></script>' in page.text
        assert (await c.get(f"/dashboard/static/{script}")).status_code == 200
        assert 'id="sign-out"' in page.text
        # Signed in already: the sign-in page sends you on.
        again = await c.get("/dashboard/sign-in?next=/dashboard/models")
        assert again.status_code == 303
        assert again.headers["location"] == "/dashboard/models"


# --- the session cache: no database I/O per request, yet every way of ending a session still works ---


def count_statements(h: Harness) -> list[str]:
    """Every statement the harness's runtime sends to its database from now on."""
    statements: list[str] = []

    @event.listens_for(h.runtime.database.engine.sync_engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    return statements


async def test_a_cached_session_resolves_without_database_io(h: Harness, client: Any) -> None:
    await sign_in(client, api_key=ADMIN_KEY)
    token = client.cookies[SESSION_COOKIE]
    first = await h.runtime.dashboard.resolve(token)  # loads the row (and the key) once
    statements = count_statements(h)
    for _ in range(9):  # the overview's requests of one refresh
        again = await h.runtime.dashboard.resolve(token)
        assert again.principal == first.principal
    assert (await client.get("/dashboard")).status_code == 200
    assert statements == []
    # Signing out moves the auth epoch: the next resolve reads again, and finds no session.
    assert await h.runtime.dashboard.sign_out(token)
    with pytest.raises(AuthenticationFailed, match="No such session"):
        await h.runtime.dashboard.resolve(token)
    assert any("dashboard_sessions" in s for s in statements)


async def test_without_a_shared_epoch_every_resolve_reads(make_harness: Callable[..., Any], postgres_url: str) -> None:
    """PostgreSQL with LISTEN turned off (behind PgBouncer) has no epoch to learn changes from
    (NoAuthEpoch): nothing is cached, so every resolve reads the row."""
    async with make_harness(database_url=postgres_url, auth_cache_listen=False) as h, browser(h) as c:
        await sign_in(c, api_key=ADMIN_KEY)
        token = c.cookies[SESSION_COOKIE]
        await h.runtime.dashboard.resolve(token)
        statements = count_statements(h)
        await h.runtime.dashboard.resolve(token)
        assert any("dashboard_sessions" in s for s in statements)


SHARED_EPOCHS = {
    "embedded-file-epoch": lambda redis_prefix, pg: {},
    "redis-epoch": lambda redis_prefix, pg: {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix},
    "postgres-notify-epoch": lambda redis_prefix, pg: {"database_url": pg},
}


@pytest.fixture(params=sorted(SHARED_EPOCHS))
def shared(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, Any]:
    pg = request.getfixturevalue("postgres_url") if request.param.startswith("postgres") else ""
    return SHARED_EPOCHS[request.param](redis_prefix, pg)


@pytest.mark.parametrize("change", ["sign-out", "revoke-key", "disable-user"])
async def test_a_session_cached_here_ends_with_a_change_made_by_another_process(
    make_harness: Callable[..., Any], make_settings: Callable[..., Settings], shared: dict[str, Any], change: str
) -> None:
    async with make_harness(**shared) as h, browser(h) as c:
        user_id = await h.create_user("frank")
        key_id, key = await h.create_key(user_id)
        await sign_in(c, api_key=key)
        token = c.cookies[SESSION_COOKIE]
        assert (await c.get("/dashboard")).status_code == 200
        statements = count_statements(h)
        assert (await c.get("/dashboard")).status_code == 200
        assert statements == []  # cached here: this process would not notice on its own
        other = build_runtime(make_settings(**shared))  # another replica, or the CLI
        async with change_arrives(h):
            try:
                if change == "sign-out":
                    assert await other.dashboard.sign_out(token)
                elif change == "revoke-key":
                    await other.auth.revoke_key(h.admin, key_id)
                else:
                    await other.auth.set_user_disabled(h.admin, user_id, True)
            finally:
                await other.close()
        assert (await c.get("/dashboard")).status_code == 303
        assert (await c.get("/api/v1/auth/me")).status_code == 401


@pytest.mark.parametrize("path", ["/dashboard/workflows", "/dashboard/contexts"])
async def test_admins_get_an_owner_filter_and_column_others_do_not(harness: Harness, path: str) -> None:
    """Issue 16: administrators see every user's runs and contexts (the scripts ask for owner=all
    unless the Owner filter names one user); other users see their own, with no owner to choose."""
    _, key = await harness.user_with_key("dev")
    for api_key, admin in ((ADMIN_KEY, True), (key, False)):
        async with browser(harness) as c:
            await sign_in(c, api_key=api_key)
            page = await c.get(path)
            assert page.status_code == 200
            assert ('name="owner"' in page.text) is admin
            assert ("<th>Owner</th>" in page.text) is admin
            assert ("Every user's" in page.text or "every user's" in page.text) is admin
