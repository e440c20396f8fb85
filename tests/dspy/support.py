"""What the DSPy tests share: a Trellis whose DSPy modules call a scriptable fake upstream (a real HTTP
server, ``tests/gateway/upstream.py``), users, and a guard that records connections off this machine."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from tests.gateway.upstream import FakeUpstream, Ok


class Waits:
    """The gateway's injected backoff ``sleep``: records each wait and returns at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def upstream_model(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": upstream.base_url,
        "model_id": "fake-model",
        "api_key": "sk-test",
        "connect_timeout_seconds": 0.5,
        "read_timeout_seconds": 2,
        "context_window": 4096,
        "max_output_tokens": 512,
        **extra,
    }


def answer(**fields: Any) -> Ok:
    """The fake upstream's next answer: the JSON object DSPy's JSON adapter expects."""
    return Ok(json.dumps(fields))


@dataclass
class Env:
    h: Harness
    up: FakeUpstream
    alice: dict[str, str] = field(default_factory=dict)
    bob: dict[str, str] = field(default_factory=dict)
    alice_id: str = ""
    bob_id: str = ""

    async def run(self, module: str, inputs: Any, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        return await self.h.client.post(
            f"/api/v1/dspy/modules/{module}/run", headers=headers or self.alice, json={"inputs": inputs, **body}
        )

    async def context(
        self, content: str, type: str = "documentation", headers: dict[str, str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        response = await self.h.client.post(
            "/api/context", headers=headers or self.alice, json={"type": type, "content": content, **extra}
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@asynccontextmanager
async def dspy_env(
    make_harness: Callable[..., Any],
    *,
    extra_models: dict[str, Any] | None = None,
    models_on_upstream: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> AsyncIterator[Env]:
    """``models_on_upstream``: more gateway models served by the same fake upstream (each
    ``upstream_model`` with the given changes, e.g. another ``model_id``)."""
    up = FakeUpstream().start()
    try:
        same = {name: upstream_model(up, **extra) for name, extra in (models_on_upstream or {}).items()}
        settings: dict[str, Any] = {
            "models": {"up": upstream_model(up), **same, **(extra_models or {})},
            "dspy": {"default_model": "up"},
            **overrides,
        }
        async with make_harness(sleep=Waits(), **settings) as h:
            env = Env(h, up)
            env.alice_id, key = await h.user_with_key("alice")
            env.alice = h.auth(key)
            env.bob_id, key = await h.user_with_key("bob")
            env.bob = h.auth(key)
            yield env
    finally:
        up.stop()


@dataclass
class NetworkGuard:
    """Connections attempted to anything but this machine's loopback, recorded and refused."""

    attempts: list[Any] = field(default_factory=list)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    guard = NetworkGuard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def local(address: Any) -> bool:
        if isinstance(address, tuple) and address:
            return str(address[0]) in ("127.0.0.1", "::1", "localhost")
        return isinstance(address, str | bytes)  # Unix sockets

    def connect(self: socket.socket, address: Any) -> None:
        if not local(address):
            guard.attempts.append(address)
            raise OSError(f"network blocked by the test: {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not local(address):
            guard.attempts.append(address)
            return 111
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "127.0.0.1", "::1", "localhost"):
            guard.attempts.append(host)
            raise socket.gaierror(f"name resolution blocked by the test: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return guard
