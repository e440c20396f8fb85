""" "This run ended" across processes, for ``execute`` with ``wait`` when another process ran the run.

On PostgreSQL the transaction that ends a run also sends ``NOTIFY trellis_run_ended`` with the run's
id (``announce``), so the signal is delivered if and only if the end was committed. Each process
that answers ``execute`` listens on one connection of its own (``RunEndListener``, asyncpg delivers
notifications on an idle connection) and wakes its waiters (``RunWaiters``), which then read the run.
That replaces polling the database for the end (every 10-100 ms per waiting request) with one read.

The signal is an accelerator, as the work queue is: while the listening connection is down, or on
SQLite (one process runs the steps and tells its waiters directly), waiters poll. Hand-written
because it is a few lines over asyncpg's ``add_listener``; no library packages PostgreSQL
notifications for asyncio with reconnection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger

log = get_logger(__name__)

CHANNEL = "trellis_run_ended"
# PostgreSQL caps a notification's payload below 8000 bytes: ids are sent comma-separated in chunks.
PAYLOAD_MAX_CHARS = 7_000


def payloads(run_ids: Iterable[str]) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for run_id in run_ids:
        if current and size + len(run_id) + 1 > PAYLOAD_MAX_CHARS:
            chunks.append(",".join(current))
            current, size = [], 0
        current.append(run_id)
        size += len(run_id) + 1
    if current:
        chunks.append(",".join(current))
    return chunks


async def announce(session: AsyncSession, run_ids: Iterable[str]) -> None:
    """Send, with the transaction that ends them, the ids of runs that ended (PostgreSQL only)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for payload in payloads(run_ids):
        await session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


class RunEndListener:
    """Listens for ended runs and calls ``on_ended(run_id)`` for each; ``listening`` says whether the
    signal can be relied on right now (reconnecting is tried at most every ``retry_seconds``)."""

    def __init__(
        self,
        dsn: str,
        on_ended: Callable[[str], None],
        clock: Clock,
        *,
        retry_seconds: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._on_ended = on_ended
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._connect_timeout = connect_timeout
        self._connection: Any = None  # an asyncpg.Connection (asyncpg is untyped)
        self._next_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._closed = False
        self.received = 0  # run ids signalled so far (observability, and what tests wait on)

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def ensure(self) -> bool:
        """Listen if not listening yet (or any more); True when notifications will arrive."""
        if self.listening:
            return True
        async with self._lock:
            if self.listening or self._closed or self._clock.monotonic() < self._next_attempt:
                return self.listening
            self._next_attempt = self._clock.monotonic() + self._retry_seconds
            import asyncpg  # type: ignore[import-untyped]  # only PostgreSQL deployments load it

            try:
                connection = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("workflow.run_end_listen_failed", error=type(exc).__name__)
                return False
            try:
                await connection.add_listener(CHANNEL, self._on_notification)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("workflow.run_end_listen_failed", error=type(exc).__name__)
                await connection.close()
                return False
            connection.add_termination_listener(self._on_lost)
            self._connection = connection
            return True

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        for run_id in payload.split(","):
            if run_id:
                self.received += 1
                self._on_ended(run_id)

    def _on_lost(self, *_: object) -> None:
        self._connection = None

    async def aclose(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close()
