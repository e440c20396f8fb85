"""The ``/ws`` tests' common ground: the app behind a real uvicorn socket, and a real WebSocket client
(the ``websockets`` library) with small helpers to authenticate, send and wait for messages.

Nothing sleeps to synchronise: a test waits for the message (or the close) it expects, with a
timeout that only bounds a failure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from tests.conftest import ADMIN_KEY, Harness
from tests.live_server import real_server

WAIT_SECONDS = 10.0
# Quick enough to test revocation and expiry without waiting long; every other limit as shipped.
WS_SETTINGS: dict[str, Any] = {"credential_check_seconds": 0.05}


@dataclass
class Live:
    h: Harness
    url: str  # http://127.0.0.1:<port>

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def open(self, *, query: str = "", **options: Any) -> AbstractAsyncContextManager[ClientConnection]:
        return connect(self.ws_url + query, open_timeout=WAIT_SECONDS, **options)

    @asynccontextmanager
    async def client(self, credential: str = ADMIN_KEY, **options: Any) -> AsyncIterator[ClientConnection]:
        """A connection authenticated by its first message."""
        async with self.open(**options) as ws:
            ack = await request(ws, {"type": "auth", "id": "auth", "credential": credential})
            assert ack["type"] == "ack", ack
            yield ws


async def receive(ws: ClientConnection, seconds: float = WAIT_SECONDS) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def receive_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool], seconds: float = WAIT_SECONDS
) -> list[dict[str, Any]]:
    """Messages up to and including the first for which ``done`` is true (pings skipped)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "ping":
                continue
            out.append(message)
            if done(message):
                return out


def is_reply(message: dict[str, Any]) -> bool:
    return message["component"] == "ws" and message["type"] in ("ack", "error", "pong")


async def request(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    """Send a client message and return the server's answer to it (carrying its id)."""
    await ws.send(json.dumps(message))
    replies = await receive_until(ws, is_reply)
    answer = replies[-1]
    assert answer["id"] == message.get("id"), (message, replies)
    return answer


async def closed(ws: ClientConnection, seconds: float = WAIT_SECONDS) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes; its close code and reason, and what came before."""
    before: list[dict[str, Any]] = []
    received: Close | None = None
    async with asyncio.timeout(seconds):
        try:
            while True:
                before.append(json.loads(await ws.recv()))
        except ConnectionClosed as exc:
            received = exc.rcvd
    assert received is not None, "closed without a close frame from the server"
    return received.code, received.reason, before


@pytest.fixture
def live_factory(make_harness: Callable[..., Any]) -> Callable[..., AbstractAsyncContextManager[Live]]:
    """``async with live_factory(**settings) as live``: a harness on a real socket."""

    @asynccontextmanager
    async def factory(**settings: Any) -> AsyncIterator[Live]:
        settings["ws"] = {**WS_SETTINGS, **settings.get("ws", {})}
        async with make_harness(**settings) as h, real_server(h.app) as url:
            yield Live(h, url)

    return factory


@pytest.fixture
async def live(live_factory: Callable[..., AbstractAsyncContextManager[Live]]) -> AsyncIterator[Live]:
    async with live_factory() as started:
        yield started
