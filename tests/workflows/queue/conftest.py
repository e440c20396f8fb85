"""Fixtures for the work-queue contract: every implementation on a real broker, a fresh name per test.

``queues`` is parametrized over the in-process queue, Redis Streams, NATS JetStream and RabbitMQ at
``TRELLIS_TEST_REDIS``, ``TRELLIS_TEST_NATS`` and ``TRELLIS_TEST_RABBITMQ`` (the machine's and CI's
by default). A missing broker fails the run; nothing is mocked or skipped. Each test gets a unique
queue name, every queue it builds is closed, and the name's stream or queue is deleted afterwards.

``Handled`` records handler calls and lets a test wait for a condition on them, with a timeout that
only guards against a hang. The duplicates each test saw are printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import REDIS_URL
from trellis.workflows.queue import WorkQueue, build_work_queue
from trellis.workflows.queue.memory import MemoryWorkQueue
from trellis.workflows.queue.taskiq_queue import TaskiqWorkQueue

BROKER_URLS = {
    "memory": "memory://",
    "redis": REDIS_URL,
    "nats": os.environ.get("TRELLIS_TEST_NATS", "nats://127.0.0.1:4222"),
    "rabbitmq": os.environ.get("TRELLIS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/"),
}
# Nothing listens on port 1: connections are refused at once.
UNREACHABLE_URLS = {
    "redis": "redis://127.0.0.1:1/0",
    "nats": "nats://127.0.0.1:1",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:1/",
}
GUARD = 15.0  # seconds: only a hang takes this long

DUPLICATES: dict[str, int] = {}


class Handled:
    """Handler calls, by run id, and a way to wait until they satisfy a condition."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []
        self._changed = asyncio.Condition()

    async def record(self, run_id: str) -> None:
        async with self._changed:
            self.calls[run_id] += 1
            self.order.append(run_id)
            self._changed.notify_all()

    async def poke(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = GUARD) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.calls.values())


@dataclass
class Queues:
    """Builds queues of one kind that share this test's name."""

    kind: str
    url: str
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}")
    built: list[WorkQueue] = field(default_factory=list)

    def __call__(self, **options: Any) -> WorkQueue:
        queue = build_work_queue(self.url, name=self.name, **options)
        self.built.append(queue)
        return queue

    def report_duplicates(self, test: str, count: int) -> None:
        DUPLICATES[f"{test}[{self.kind}]"] = count

    async def cleanup(self) -> None:
        for queue in self.built:
            await queue.close()
        remover = build_work_queue(self.url, name=self.name)
        assert isinstance(remover, MemoryWorkQueue | TaskiqWorkQueue)
        await remover.delete()
        await remover.close()


async def _queues_of(kind: str) -> AsyncIterator[Queues]:
    made = Queues(kind, BROKER_URLS[kind])
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture(params=list(BROKER_URLS))
async def queues(request: pytest.FixtureRequest) -> AsyncIterator[Queues]:
    async for made in _queues_of(request.param):
        yield made


@pytest.fixture(params=[kind for kind in BROKER_URLS if kind != "memory"])
async def broker_queues(request: pytest.FixtureRequest) -> AsyncIterator[Queues]:
    """The queues that outlive a consumer process (every broker; not the in-process queue)."""
    async for made in _queues_of(request.param):
        yield made


@pytest.fixture(params=[kind for kind in BROKER_URLS if kind not in ("memory", "rabbitmq")])
async def timeout_queues(request: pytest.FixtureRequest) -> AsyncIterator[Queues]:
    """The queues that redeliver after a timeout (Redis, NATS); RabbitMQ redelivers only when the
    consumer's connection drops."""
    async for made in _queues_of(request.param):
        yield made


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if DUPLICATES:
        terminalreporter.section("work queue: duplicate deliveries")
        for test, count in sorted(DUPLICATES.items()):
            terminalreporter.write_line(f"{test}: {count}")


class TcpProxy:
    """A broker outage on demand: forwards a local port to the broker; ``stop`` drops every
    connection and refuses new ones, ``start`` serves again on the same port."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[parts.scheme])
        self._parts = parts
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        auth = self._parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(self._parts._replace(netloc=netloc))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, broker_writer}
        for reader, writer in ((client_reader, broker_writer), (broker_reader, client_writer)):
            pump = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for pump in set(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)


DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "nats": 4222, "amqp": 5672, "amqps": 5671}


@pytest.fixture
async def proxy_for() -> AsyncIterator[Callable[[str], Awaitable[TcpProxy]]]:
    started: list[TcpProxy] = []

    async def start(url: str) -> TcpProxy:
        proxy = TcpProxy(url)
        await proxy.start()
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            await proxy.stop()
