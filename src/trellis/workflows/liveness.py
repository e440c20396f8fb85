"""Seeing a worker die before its leases run out (PostgreSQL).

A lease alone gives a killed worker's runs to another worker only when it expires: the whole
``lease_seconds`` after the last renewal, which for a run just claimed is the whole lease. On
PostgreSQL a worker can be seen to die at once: for as long as it lives it holds a session advisory
lock keyed by its id, on a connection of its own, and when its process dies the kernel closes that
connection, the server ends the session and the lock goes with it. At each poll (at most once per
``poll_seconds``; ``WorkflowWorker.release_dead``) every worker looks at the owners of unexpired
leases other than itself; an owner whose lock it can take at two looks a poll apart is gone (a
live worker whose connection dropped takes its lock back at its own next poll), and that owner's
runs are made due at once, to be claimed as any due run is. A claim bumps the run's lease epoch, so
should the owner be alive after all its late writes are fenced and its next renewal tells it to
stop.

Only ids that end in ``LIVE_MARK`` are judged this way: a worker that holds no lock (SQLite, the
setting off, an older version during a rolling upgrade) is left to its leases. A host that vanishes
without closing its sockets keeps its sessions until the server's TCP keepalive notices; the lease
still bounds that case. Behind PgBouncer in transaction mode session locks do not work: turn
``[workflow] liveness`` off there.

Hand-written: a few lines over ``storage.listen.DedicatedConnection`` and ``pg_try_advisory_lock``;
no library does worker liveness for a database-backed queue of our own.
"""

from __future__ import annotations

from typing import Any

from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger
from trellis.storage.listen import DedicatedConnection
from trellis.workflows.repository import LIVE_MARK, WORKER_ALIVE_LOCK

log = get_logger(__name__)


def is_live_id(worker_id: str) -> bool:
    return worker_id.endswith(LIVE_MARK)


class WorkerLiveness:
    """Holds this worker's liveness lock on a dedicated connection, taken again (at most every
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
        self._connection = DedicatedConnection(
            dsn,
            clock,
            self._take_lock,
            purpose="workflow worker liveness",
            retry_seconds=retry_seconds,
            connect_timeout=connect_timeout,
        )

    @property
    def held(self) -> bool:
        return self._connection.alive

    async def ensure(self) -> bool:
        """Hold the lock if not holding it yet (or any more); True while it is held."""
        return await self._connection.ensure()

    async def _take_lock(self, connection: Any) -> bool:
        taken = await connection.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", WORKER_ALIVE_LOCK, self.worker_id
        )
        if not taken:
            # Another live worker's id hashes to the same key (about one chance in 2**32 per pair):
            # this one is left to its leases.
            log.warning("workflow.liveness_key_taken", worker=self.worker_id)
        return bool(taken)

    async def aclose(self) -> None:
        """Let go of the lock (a clean stop: the runs were finished or handed back first)."""
        await self._connection.aclose()
