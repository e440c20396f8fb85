"""What the workflow tests share: a real HTTP server standing in for the services steps call, and
short ways to save a workflow and run it through the REST door."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import ADMIN_KEY, Harness

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1: ``/ok`` answers JSON, ``/flaky/<n>`` fails n times with 503
    then answers, ``/fail`` always 500, ``/bad`` 400, ``/slow`` never answers (until cancelled),
    ``/concurrent`` answers after a moment and records how many were in flight at once."""

    base_url: str = ""
    calls: Counter[str] = field(default_factory=Counter)
    headers: list[dict[str, str]] = field(default_factory=list)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    slow_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@asynccontextmanager
async def running_upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream()

    async def record(request: web.Request) -> None:
        upstream.calls[request.path] += 1
        upstream.headers.append(dict(request.headers))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        body = await request.json() if request.can_read_body else None
        return web.json_response({"path": request.path, "echo": body, "n": upstream.calls[request.path]})

    async def flaky(request: web.Request) -> web.Response:
        await record(request)
        failures = int(request.match_info["n"])
        if upstream.calls[request.path] <= failures:
            return web.json_response({"error": "try again"}, status=503)
        return web.json_response({"ok": True, "after": upstream.calls[request.path]})

    async def fail(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"error": "broken"}, status=500)

    async def bad(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"error": "bad"}, status=400)

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        upstream.slow_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            upstream.slow_cancelled.set()
            raise
        return web.Response()

    async def concurrent(request: web.Request) -> web.Response:
        await record(request)
        upstream.in_flight += 1
        upstream.most_in_flight = max(upstream.most_in_flight, upstream.in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            upstream.in_flight -= 1
        return web.json_response({"item": request.query.get("item")})

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_route("*", "/flaky/{n}", flaky)
    app.router.add_route("*", "/fail", fail)
    app.router.add_route("*", "/bad", bad)
    app.router.add_get("/slow", slow)
    app.router.add_get("/concurrent", concurrent)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream.base_url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        await runner.cleanup()


async def save(h: Harness, name: str, definition: dict[str, Any], headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    response = await h.client.put(f"/api/v1/workflows/{name}", json={"definition": definition}, headers=headers)
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def execute(
    h: Harness, name: str, input: Any = None, *, wait: float = 10, headers: dict[str, str] = ADMIN, **fields: Any
) -> dict[str, Any]:
    body = {"workflow": name, "input": {} if input is None else input, "wait": wait, **fields}
    response = await h.client.post("/api/v1/workflow/execute", json=body, headers=headers)
    assert response.status_code in (200, 202), response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def status(h: Harness, run_id: str, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    response = await h.client.get(f"/api/v1/workflow/status/{run_id}", headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def events(h: Harness, run_id: str, headers: dict[str, str] = ADMIN) -> list[dict[str, Any]]:
    response = await h.client.get(f"/api/v1/workflow/{run_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]["items"]
    return items


async def until_status(h: Harness, run_id: str, wanted: set[str], *, seconds: float = 10) -> dict[str, Any]:
    """Poll the status until it is one of ``wanted`` (a failure guard, not a sleep for timing)."""
    async with asyncio.timeout(seconds):
        while True:
            found = await status(h, run_id)
            if found["status"] in wanted:
                return found
            await asyncio.sleep(0.01)


def steps_by_key(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["key"]: step for step in detail["steps"]}


def local_outbound(**settings: Any) -> dict[str, Any]:
    """Settings letting steps call the test's own servers on 127.0.0.1."""
    return {"workflow": {"outbound_allow": ["127.0.0.1/32"], **settings}}
