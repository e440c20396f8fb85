""" "This run ended" across processes, for ``execute`` with ``wait`` when another process ran the run.

On PostgreSQL the transaction that ends a run also sends ``NOTIFY trellis_run_ended`` with the run's
id (``announce``), so the signal is delivered if and only if the end was committed. Each process
that answers ``execute`` listens on one connection of its own (``RunEndListener``, asyncpg delivers
notifications on an idle connection) and wakes its waiters (``RunWaiters``), which then read the run.
That replaces polling the database for the end (every 10-100 ms per waiting request) with one read.

The signal is an accelerator, as the work queue is: while the listening connection is down, or on
SQLite (one process runs the steps and tells its waiters directly), waiters poll. The listening
connection itself is ``storage.listen.PostgresListener``, shared with the credential cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.kit.clock import Clock
from trellis.storage.listen import PostgresListener

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
        self._on_ended = on_ended
        self._listener = PostgresListener(
            dsn, CHANNEL, self._on_payload, clock, retry_seconds=retry_seconds, connect_timeout=connect_timeout
        )
        self.received = 0  # run ids signalled so far (observability, and what tests wait on)

    @property
    def listening(self) -> bool:
        return self._listener.listening

    async def ensure(self) -> bool:
        """Listen if not listening yet (or any more); True when notifications will arrive."""
        return await self._listener.ensure()

    def _on_payload(self, payload: str) -> None:
        for run_id in payload.split(","):
            if run_id:
                self.received += 1
                self._on_ended(run_id)

    async def aclose(self) -> None:
        await self._listener.aclose()
