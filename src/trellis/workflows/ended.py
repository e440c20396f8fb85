""" "This run ended" across processes, for ``execute`` with ``wait`` when another process ran the run.

On PostgreSQL the transaction that ends a run also sends ``NOTIFY trellis_run_ended`` with the run's
id (``announce``), so the signal is delivered if and only if the end was committed. Each process
that answers ``execute`` listens on one connection of its own (``RunEndListener``, asyncpg delivers
notifications on an idle connection) and wakes its waiters (``RunWaiters``). That replaces polling
the database for the end (every 10-100 ms per waiting request).

A worker also sends the run as it wrote it, when it fits in a notification (a line ``<id>\t<JSON of
the run's columns>``; a bare id otherwise, and for ends the service writes): a waiter then answers
without reading the run back, which was a fifth of an API process's CPU per run in
``bench/workflow_runs.py``. Only a process with a waiter for that run decodes it. A payload of the
older shape (ids separated by commas) is still understood.

The signal is an accelerator, as the work queue is: while the listening connection is down, or on
SQLite (one process runs the steps and tells its waiters directly), waiters poll. The listening
connection itself is ``storage.listen.PostgresListener``, shared with the credential cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.kit.clock import Clock
from trellis.storage.listen import PostgresListener
from trellis.workflows.models import WorkflowRun

CHANNEL = "trellis_run_ended"
# PostgreSQL caps a notification's payload below 8000 bytes (in bytes: the run's JSON is ASCII).
PAYLOAD_MAX_CHARS = 7_000
_COLUMNS = tuple(column.key for column in WorkflowRun.__table__.columns)
_MOMENTS = frozenset(key for key in _COLUMNS if key.endswith("_at"))


def _encode(run: WorkflowRun) -> str | None:
    """``<id>\t<the run's columns as JSON>``, or None when it does not fit in a notification."""
    values = {key: getattr(run, key) for key in _COLUMNS}
    for key in _MOMENTS:
        if values[key] is not None:
            values[key] = values[key].isoformat()
    try:
        line = f"{run.id}\t{json.dumps(values, separators=(',', ':'), allow_nan=False)}"
    except (TypeError, ValueError):
        return None
    return line if len(line) <= PAYLOAD_MAX_CHARS else None


def decode(snapshot: str) -> WorkflowRun:
    values: dict[str, Any] = json.loads(snapshot)
    for key in _MOMENTS:
        if values.get(key) is not None:
            values[key] = datetime.fromisoformat(values[key])
    return WorkflowRun(**values)


def payloads(ended: Iterable[str | WorkflowRun]) -> list[str]:
    """The notifications for runs that ended: lines of an id, with the run when given and it fits."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for item in ended:
        line = item if isinstance(item, str) else (_encode(item) or item.id)
        if current and size + len(line) + 1 > PAYLOAD_MAX_CHARS:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append("\n".join(current))
    return chunks


def entries(payload: str) -> Iterator[tuple[str, str | None]]:
    """(run id, the run's JSON or None) for each run a notification names."""
    for line in payload.split("\n"):
        run_id, tab, snapshot = line.partition("\t")
        if tab:
            yield run_id, snapshot
        else:
            yield from ((part, None) for part in line.split(",") if part)  # ids alone, or the older shape


async def announce(session: AsyncSession, ended: Iterable[str | WorkflowRun]) -> None:
    """Send, with the transaction that ends them, the runs that ended (PostgreSQL only): an id, or
    the run as it is being written (sent along when it fits)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for payload in payloads(ended):
        await session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


class RunEndListener:
    """Listens for ended runs and calls ``on_ended(run_id, run)`` for each, ``run`` as the worker
    wrote it when the notification carried it and ``wanted(run_id)`` (someone here waits for it),
    else None; ``listening`` says whether the signal can be relied on right now (reconnecting is tried
    at most every ``retry_seconds``)."""

    def __init__(
        self,
        dsn: str,
        on_ended: Callable[[str, WorkflowRun | None], None],
        clock: Clock,
        *,
        wanted: Callable[[str], bool] = lambda _run_id: False,
        retry_seconds: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._on_ended = on_ended
        self._wanted = wanted
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
        for run_id, snapshot in entries(payload):
            self.received += 1
            run = None
            if snapshot is not None and self._wanted(run_id):
                try:
                    run = decode(snapshot)
                except (ValueError, TypeError):  # read back from the database instead
                    run = None
            self._on_ended(run_id, run)

    async def aclose(self) -> None:
        await self._listener.aclose()
