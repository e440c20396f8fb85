"""Writes the episodic log off the request path: ``submit`` queues, a background task batches.

The gateway calls ``submit(record)`` once per model call. It never awaits the database: the record
goes into an in-memory queue and a background task inserts queued records in batches (one
transaction and one executemany-style Core insert per batch). A batch is written as soon as
``batch_size`` records are waiting, or ``flush_interval_seconds`` after the first one arrived.

Failures never reach callers and never stop the task:

* the queue is bounded (``max_queue``); when full, a record is dropped, counted, reported to the
  ``on_drop`` hook and logged (at most every ``DROP_LOG_INTERVAL_SECONDS``) — requests never block;
* a batch that fails with a transient error (database unreachable, locked, schema not migrated
  yet) is retried with exponential backoff, then dropped with one error line giving the count;
* a batch refused for its data (``IntegrityError``/``DataError``: e.g. the owner was deleted
  between the call and the write) is retried row by row, so only the offending rows are dropped.

``stop()`` writes everything still queued before returning, so a graceful shutdown loses nothing.
``flush()`` waits until everything submitted so far has been written (or dropped). Retention:
when ``retention_days`` > 0, rows older than that are purged every ``purge_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import String, delete, insert, select
from sqlalchemy.exc import DataError, IntegrityError

from trellis.episodic.models import EpisodicLog
from trellis.episodic.schemas import CallRecord
from trellis.kit.clock import Clock
from trellis.kit.ids import new_id
from trellis.kit.logging import get_logger
from trellis.storage.database import Database

log = get_logger(__name__)

DropReason = Literal["queue_full", "write_failed", "stopped"]
DropHook = Callable[[DropReason, int], None]
Sleep = Callable[[float], Awaitable[None]]

DROP_LOG_INTERVAL_SECONDS = 10.0
PURGE_CHUNK_ROWS = 5_000

_FIELDS = tuple(f.name for f in fields(CallRecord))
# Bounded string columns: values are cut to fit rather than failing the row on PostgreSQL
# (a requested model name comes from the client and can be any length).
_MAX_LENGTHS = {
    column.name: column.type.length
    for column in EpisodicLog.__table__.columns
    if isinstance(column.type, String) and column.type.length is not None and column.name in _FIELDS
}


@dataclass
class WriterStats:
    accepted: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    dropped_write_failed: int = 0
    dropped_stopped: int = 0
    batches: int = 0
    retries: int = 0
    purged: int = 0


class EpisodicLogWriter:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        batch_size: int = 100,
        flush_interval_seconds: float = 0.5,
        max_queue: int = 10_000,
        *,
        retention_days: int = 0,
        purge_interval_seconds: float = 3600.0,
        max_attempts: int = 4,
        backoff_initial_seconds: float = 0.1,
        backoff_max_seconds: float = 2.0,
        on_drop: DropHook | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or max_attempts < 1:
            raise ValueError("batch_size, max_queue and max_attempts must be at least 1")
        self._db = database
        self._clock = clock
        self._batch_size = batch_size
        self._flush_interval = flush_interval_seconds
        self._max_queue = max_queue
        self._retention_days = retention_days
        self._purge_interval = purge_interval_seconds
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self.on_drop = on_drop
        self._sleep = sleep
        self.stats = WriterStats()

        self._queue: deque[dict[str, Any]] = deque()
        # Records leave the queue in order, so "everything submitted up to n is done" is a count.
        self._processed = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._last_drop_log: float | None = None

    # --- the request path ----------------------------------------------------------------------

    def submit(self, record: CallRecord) -> bool:
        """Queue a record for writing; never blocks. Returns False when it was dropped instead.

        Call from the event loop's thread (not from worker threads).
        """
        if self._closed:
            self._drop("stopped", 1)
            return False
        if len(self._queue) >= self._max_queue:
            self._drop("queue_full", 1)
            return False
        row = {name: getattr(record, name) for name in _FIELDS}
        if row["id"] is None:
            row["id"] = new_id("log")
        if row["created_at"] is None:
            row["created_at"] = self._clock.now()
        for name, length in _MAX_LENGTHS.items():
            value = row[name]
            if value is not None and len(value) > length:
                row[name] = value[:length]
        self._queue.append(row)
        self.stats.accepted += 1
        if self._wakeup is not None and (len(self._queue) == 1 or len(self._queue) >= self._batch_size):
            self._wakeup.set()
        return True

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (and the retention purge). Call from a running event loop."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._closed = False
        self._wakeup = asyncio.Event()
        if self._queue:
            self._wakeup.set()
        self._task = asyncio.create_task(self._run(), name="episodic-log-writer")
        if self._retention_days > 0:
            self._purge_task = asyncio.create_task(self._purge_loop(), name="episodic-log-purge")

    async def stop(self) -> None:
        """Write everything still queued, then stop. Records submitted afterwards are dropped."""
        self._stopping = True
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
            self._purge_task = None
        if self._task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                await self._task
            except Exception:
                log.exception("episodic_log_writer_crashed")
            self._task = None
        await self._drain()  # never started, or the task ended early: write what is left here
        self._closed = True

    async def flush(self) -> None:
        """Wait until every record submitted before this call has been written (or dropped)."""
        target = self.stats.accepted
        if self._processed >= target:
            return
        if self._task is None or self._task.done():
            await self._drain()
            return
        assert self._wakeup is not None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, future))
        self._wakeup.set()
        await future

    # --- the background task -------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            if not self._queue:
                if self._stopping:
                    return
                wakeup.clear()
                await wakeup.wait()
                continue
            if len(self._queue) < self._batch_size and not self._stopping and not self._flush_waiters:
                # Linger so that a burst becomes one batch; a full batch, flush or stop cuts it short.
                wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self._flush_interval)
            await self._write_next_batch()

    async def _drain(self) -> None:
        while self._queue:
            await self._write_next_batch()

    async def _write_next_batch(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
        try:
            await self._write(batch)
        except Exception:
            log.exception("episodic_log_writer_error", dropped=len(batch))
            self._count_failed(len(batch))
        self._processed += len(batch)
        self._release_flushers()

    def _release_flushers(self) -> None:
        waiting = []
        for target, future in self._flush_waiters:
            if target <= self._processed:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._flush_waiters = waiting

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        delay = self._backoff_initial
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._insert(batch)
            except (IntegrityError, DataError):
                await self._write_rows_one_by_one(batch)
                return
            except Exception as exc:  # noqa: BLE001 - any database failure: back off and retry
                if attempt == self._max_attempts:
                    log.error(
                        "episodic_log_batch_dropped",
                        dropped=len(batch),
                        attempts=attempt,
                        error=type(exc).__name__,
                        detail=str(exc).splitlines()[0][:300] if str(exc) else "",
                    )
                    self._count_failed(len(batch))
                    return
                self.stats.retries += 1
                log.warning("episodic_log_batch_retry", rows=len(batch), attempt=attempt, error=type(exc).__name__)
                await self._sleep(delay)
                delay = min(delay * 2, self._backoff_max)
            else:
                self.stats.batches += 1
                self.stats.written += len(batch)
                return

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(EpisodicLog), rows)

    async def _write_rows_one_by_one(self, batch: list[dict[str, Any]]) -> None:
        """A batch the database refused for its data: keep every row that can be kept."""
        failed = 0
        for row in batch:
            try:
                await self._insert([row])
            except Exception as exc:  # noqa: BLE001 - this row is lost; the others are not
                failed += 1
                log.warning("episodic_log_row_refused", log_id=row["id"], error=type(exc).__name__)
            else:
                self.stats.written += 1
        self.stats.batches += 1
        if failed:
            log.error("episodic_log_rows_dropped", dropped=failed, batch=len(batch))
            self._count_failed(failed)

    # --- drops ---------------------------------------------------------------------------------

    def _count_failed(self, count: int) -> None:
        self.stats.dropped_write_failed += count
        if self.on_drop is not None:
            self.on_drop("write_failed", count)

    def _drop(self, reason: DropReason, count: int) -> None:
        if reason == "queue_full":
            self.stats.dropped_queue_full += count
        elif reason == "stopped":
            self.stats.dropped_stopped += count
        if self.on_drop is not None:
            self.on_drop(reason, count)
        now = self._clock.monotonic()
        if self._last_drop_log is None or now - self._last_drop_log >= DROP_LOG_INTERVAL_SECONDS:
            self._last_drop_log = now
            log.warning(
                "episodic_log_dropped",
                reason=reason,
                dropped_queue_full=self.stats.dropped_queue_full,
                dropped_stopped=self.stats.dropped_stopped,
                max_queue=self._max_queue,
            )

    # --- retention -----------------------------------------------------------------------------

    async def purge_older_than(self, days: int) -> int:
        """Delete rows created more than ``days`` days ago; returns how many. Deletes in chunks so
        that no transaction holds the table (or SQLite's write lock) for long."""
        cutoff = self._clock.now() - timedelta(days=days)
        oldest = select(EpisodicLog.id).where(EpisodicLog.created_at < cutoff).limit(PURGE_CHUNK_ROWS)
        total = 0
        while True:
            async with self._db.engine.begin() as conn:
                result = await conn.execute(delete(EpisodicLog).where(EpisodicLog.id.in_(oldest)))
            total += result.rowcount
            if result.rowcount < PURGE_CHUNK_ROWS:
                break
        self.stats.purged += total
        if total:
            log.info("episodic_log_purged", rows=total, older_than_days=days)
        return total

    async def _purge_loop(self) -> None:
        # The first purge comes soon after start (servers restarted often still purge), then
        # one every interval.
        delay = min(self._purge_interval, 60.0)
        while True:
            await self._sleep(delay)
            delay = self._purge_interval
            try:
                await self.purge_older_than(self._retention_days)
            except Exception as exc:  # noqa: BLE001 - retention must never take the writer down
                log.warning("episodic_log_purge_failed", error=type(exc).__name__)
