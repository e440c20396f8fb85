"""What the alert tests share: a webhook receiver (a real HTTP server) and small helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import Harness
from tests.live_server import real_server

RULES = "/api/v1/alerts/rules"
EVENTS = "/api/v1/alerts/events"
SILENCES = "/api/v1/alerts/silences"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Webhook deliveries as they arrive; answers ``status`` (200 by default)."""

    url: str = ""
    status: int = 200
    deliveries: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: Request) -> JSONResponse:
        state.deliveries.append(Received(dict(request.headers), await request.body()))
        state.arrived.set()
        return JSONResponse({"ok": True}, status_code=state.status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with real_server(app) as url:
        state.url = f"{url}/hook"
        yield state


async def sample(h: Harness) -> None:
    await h.runtime.monitoring.collector.sample()


async def traffic(h: Harness, headers: dict[str, str], n: int, path: str = "/api/v1/db/logs") -> None:
    for _ in range(n):
        await h.client.get(path, headers=headers)


def ok_data(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def fields_of(response: Any) -> list[str]:
    return [f["field"] for f in response.json()["error"]["details"]["fields"]]
