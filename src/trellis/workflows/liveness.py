"""Seeing a worker die before its leases run out (PostgreSQL).

A lease alone gives a killed worker's runs to another worker only when it expires: the whole
``lease_seconds`` after the last renewal, which for a run just claimed is the whole lease. On
PostgreSQL a worker can be seen to die at once: for as long as it lives it holds a session advisory
lock keyed by its id, on a connection of its own, and when its process dies the kernel closes that
connection, the server ends the session and the lock goes with it. At each poll (at most once per
``poll_seconds``; ``repository.release_dead_owners``) every worker looks at the owners of unexpired
leases other than itself; an owner whose lock it can take is gone, and that owner's runs are made
due at once, to be claimed as any due run is. A claim bumps the run's lease epoch, so should the
owner be alive after all (its connection dropped, not its process) its late writes are fenced and
its next renewal tells it to stop.

Only ids that end in ``LIVE_MARK`` are judged this way: a worker that holds no lock (SQLite, the
setting off, an older version during a rolling upgrade) is left to its leases. A host that vanishes
without closing its sockets keeps its sessions until the server's TCP keepalive notices; the lease
still bounds that case. Behind PgBouncer in transaction mode session locks do not work: turn
``[workflow] liveness`` off there.

Hand-written: a few lines over asyncpg and ``pg_try_advisory_lock``; no library does worker
liveness for a database-backed queue of our own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger
from trellis.workflows.repository import LIVE_MARK, WORKER_ALIVE_LOCK

log = get_logger(__name__)


def is_live_id(worker_id: str) -> bool:
    return worker_id.endswith(LIVE_MARK)


class WorkerLiveness:
    """Holds this worker's liveness lock on a dedicated connection, re-taken (at most every
    ``retry_seconds``) when the connection is lost."""

    def __init__(
        self,
        dsn: str,
        worker_id: str,
        clock: Clock,
        *,
        retry_seconds: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if not is_live_id(worker_id):
            raise ValueError(f"a worker id that holds a liveness lock ends in {LIVE_MARK!r}: {worker_id!r}")
        self.worker_id = worker_id
        self._dsn = dsn
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._connect_timeout = connect_timeout
        self._connection: Any = None  # an asyncpg.Connection (asyncpg is untyped)
        self._next_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def held(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def ensure(self) -> bool:
        """Hold the lock if not holding it yet (or any more); True while it is held."""
        if self.held:
            return True
        async with self._lock:
            if self.held or self._closed or self._clock.monotonic() < self._next_attempt:
                return self.held
            self._next_attempt = self._clock.monotonic() + self._retry_seconds
            import asyncpg  # type: ignore[import-untyped]  # only PostgreSQL deployments load it

            try:
                connection = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("workflow.liveness_unavailable", worker=self.worker_id, error=type(exc).__name__)
                return False
            try:
                taken = await connection.fetchval(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))", WORKER_ALIVE_LOCK, self.worker_id
                )
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("workflow.liveness_unavailable", worker=self.worker_id, error=type(exc).__name__)
                await connection.close()
                return False
            if not taken:
                # Another live worker's id hashes to the same key (about one chance in 2**32 per
                # pair): this one is left to its leases.
                log.warning("workflow.liveness_key_taken", worker=self.worker_id)
                await connection.close()
                return False
            connection.add_termination_listener(self._on_terminated)
            self._connection = connection
            return True

    def _on_terminated(self, *_: object) -> None:
        self._connection = None

    async def aclose(self) -> None:
        """Let go of the lock (a clean stop: the runs were finished or handed back first)."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close()
