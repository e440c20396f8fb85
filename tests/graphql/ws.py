"""A real graphql-transport-ws client for the tests: the app behind a uvicorn socket, and the
``websockets`` library speaking the protocol (connection_init / ack, subscribe, next, error,
complete) as a browser's graphql-ws client would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Harness
from tests.live_server import real_server

PROTOCOL = "graphql-transport-ws"


@asynccontextmanager
async def served(h: Harness) -> AsyncIterator[str]:
    """The harness's app (lifespan already running) behind a real uvicorn socket; yields ws://…/graphql."""
    async with real_server(h.app) as url:
        yield url.replace("http://", "ws://", 1) + "/graphql"


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = json.loads(raw)
        return message

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"type": "connection_init", "payload": payload or {}})
        return await self.receive()

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        await self.send({"id": id, "type": "subscribe", "payload": payload})

    async def until_done(
        self, id: str, timeout: float = 20, on_next: Callable[[dict[str, Any]], None] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every ``next`` payload for ``id``, and the message that ended it (complete or error);
        ``on_next`` sees each payload as it arrives."""
        payloads = []
        async with asyncio.timeout(timeout):
            while True:
                message = await self.receive(timeout)
                if message.get("type") == "ping":
                    await self.send({"type": "pong"})
                    continue
                assert message.get("id") == id, message
                if message["type"] != "next":
                    return payloads, message
                payloads.append(message["payload"])
                if on_next is not None:
                    on_next(message["payload"])

    async def closed(self, timeout: float = 10) -> tuple[int | None, str | None]:
        """Wait for the server to close the socket: (code, reason)."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.ws.recv()
        return self.ws.close_code, self.ws.close_reason


@asynccontextmanager
async def graphql_socket(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Socket]:
    async with connect(url, subprotocols=[PROTOCOL], additional_headers=headers or {}) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == PROTOCOL
        yield Socket(ws)
