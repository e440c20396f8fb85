"""The episodic log writer, on a SQLite file and on PostgreSQL: batches, flush, stop, failures, drops,
retention. No database is mocked: failures are real (a schema not migrated yet, a foreign key)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Harness
from tests.episodic.support import BASE_TIME, all_rows, count_rows, record
from trellis.auth.models import User
from trellis.episodic.schemas import CallRecord
from trellis.episodic.writer import EpisodicLogWriter
from trellis.kit.clock import ManualClock
from trellis.storage import migrate
from trellis.storage.database import Database

OWNER = "usr_owner"


async def _add_owner(database: Database) -> None:
    async with database.transaction() as session:
        session.add(User(id=OWNER, username="owner", role="developer", disabled=False, created_at=BASE_TIME))


@pytest.fixture
async def raw_database(database_url: str) -> AsyncIterator[Database]:
    """An empty database: no schema yet."""
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture
async def database(raw_database: Database) -> Database:
    """A migrated database with one user, ``OWNER``."""
    await migrate.upgrade(raw_database)
    await _add_owner(raw_database)
    return raw_database


class Drops:
    """An on_drop hook that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, reason: str, count: int) -> None:
        self.calls.append((reason, count))


# --- batching and round trip -------------------------------------------------------------------


def _full_record(i: int, owner_id: str) -> CallRecord:
    return CallRecord(
        id=f"log_test_{i:04d}",
        created_at=BASE_TIME + timedelta(seconds=i, microseconds=123_456),
        owner_id=owner_id,
        request_id=f"req_{i}",
        door=("rest", "openai", "cli", "workflow", "dspy")[i % 5],
        requested_model="external-model",
        served_model="smollm2-135m",
        provider="llamacpp",
        prompt=f"prompt {i} — ünïcödé",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": f'say "{i}"'}],
        response=f"answer {i}\nline two",
        prompt_tokens=10 + i,
        completion_tokens=20 + i,
        latency_ms=100.25 + i,
        ttft_ms=None if i % 2 else 7.5,
        cost=0.0015 * i,
        cached=i % 3 == 0,
        status=("ok", "error", "cancelled")[i % 3],
        error="boom" if i % 3 == 1 else None,
        finish_reason="stop" if i % 3 == 0 else None,
        attempts=1 + i % 3,
        fallback_from="bigger-model" if i % 4 == 0 else None,
    )


async def test_records_are_batched_and_every_field_round_trips(
    database_url: str, make_harness: Callable[..., Any]
) -> None:
    h: Harness
    async with make_harness(database_url=database_url) as h:
        owner = await h.create_user("owner")
        writer = h.runtime.logs  # the app's own writer, started by the lifespan
        records = [_full_record(i, owner) for i in range(250)]
        batches_before = writer.stats.batches
        for r in records:
            assert writer.submit(r) is True
        await writer.flush()
        # 250 records submitted at once with batch_size 100: three transactions.
        assert writer.stats.batches - batches_before == 3
        assert writer.queued == 0
        rows = {row.id: row for row in await all_rows(h.runtime.database)}
        assert len(rows) == 250
        for r in records:
            assert r.id is not None
            row = rows[r.id]
            for name, value in _as_dict(r).items():
                assert getattr(row, name) == value, (name, getattr(row, name), value)
            assert row.created_at.tzinfo is not None


async def test_writer_assigns_id_and_created_at_when_absent(database: Database) -> None:
    clock = ManualClock(BASE_TIME)
    writer = EpisodicLogWriter(database, clock)
    writer.start()
    writer.submit(record(OWNER, messages=None, prompt=None, response=None))
    clock.advance(5)
    writer.submit(record(OWNER))
    await writer.stop()
    rows = sorted(await all_rows(database), key=lambda row: row.created_at)
    assert [row.created_at for row in rows] == [BASE_TIME, BASE_TIME + timedelta(seconds=5)]
    assert all(row.id.startswith("log_") for row in rows)
    assert rows[0].id != rows[1].id
    assert rows[0].messages is None
    assert rows[0].prompt is None


async def test_overlong_names_are_cut_to_fit_not_lost(database: Database) -> None:
    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME))
    writer.start()
    writer.submit(record(OWNER, requested_model="m" * 1000, finish_reason="f" * 100, request_id="r" * 300))
    await writer.stop()
    [row] = await all_rows(database)
    assert row.requested_model == "m" * 200
    assert row.finish_reason == "f" * 32
    assert row.request_id == "r" * 128
    assert writer.stats.dropped_write_failed == 0


# --- stop and flush ----------------------------------------------------------------------------


async def test_stop_writes_everything_still_queued(database: Database) -> None:
    drops = Drops()
    # A linger far longer than the test: only stop() can be what writes the tail.
    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME), flush_interval_seconds=3600, on_drop=drops)
    writer.start()
    for i in range(500):
        writer.submit(record(OWNER, request_id=f"req_{i}"))
    await writer.stop()
    assert await count_rows(database) == 500
    assert writer.stats.written == 500
    assert writer.queued == 0
    # After stop, nothing is accepted (and the drop is counted, not silent).
    assert writer.submit(record(OWNER)) is False
    assert writer.stats.dropped_stopped == 1
    assert drops.calls == [("stopped", 1)]


async def test_app_shutdown_writes_queued_logs(database_url: str, make_harness: Callable[..., Any]) -> None:
    async with make_harness(database_url=database_url) as h:
        owner = await h.create_user("owner")
        for i in range(150):
            h.runtime.logs.submit(record(owner, request_id=f"req_{i}"))
    # The lifespan has ended (writer stopped, engine disposed): read with a fresh connection.
    database = Database(database_url)
    try:
        assert await count_rows(database) == 150
    finally:
        await database.dispose()


async def test_flush_before_start_writes_in_place(database: Database) -> None:
    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME))
    for _ in range(3):
        writer.submit(record(OWNER))
    await writer.flush()
    assert await count_rows(database) == 3


async def test_flush_waits_only_for_what_was_submitted(database: Database) -> None:
    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME), batch_size=7)
    writer.start()
    try:
        for _ in range(20):
            writer.submit(record(OWNER))
        await writer.flush()
        assert await count_rows(database) == 20
        await writer.flush()  # nothing pending: returns at once
        writer.submit(record(OWNER))
        await writer.flush()
        assert await count_rows(database) == 21
    finally:
        await writer.stop()


# --- failures ----------------------------------------------------------------------------------


async def test_transient_failure_is_retried_with_backoff(raw_database: Database) -> None:
    """A real transient failure: the writer runs before the schema exists (as when a replica starts
    before `trellis migrate` has run). The first insert fails; the migration lands during the
    backoff; the retry writes the batch."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            await migrate.upgrade(raw_database)
            await _add_owner(raw_database)

    drops = Drops()
    writer = EpisodicLogWriter(raw_database, ManualClock(BASE_TIME), sleep=sleep, on_drop=drops)
    writer.start()
    try:
        for i in range(5):
            writer.submit(record(OWNER, request_id=f"req_{i}"))
        await writer.flush()
    finally:
        await writer.stop()
    assert sleeps == [0.1]
    assert writer.stats.retries == 1
    assert writer.stats.written == 5
    assert await count_rows(raw_database) == 5
    assert drops.calls == []


async def test_batch_dropped_after_retries_and_writer_keeps_going(raw_database: Database) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    drops = Drops()
    writer = EpisodicLogWriter(
        raw_database,
        ManualClock(BASE_TIME),
        max_attempts=4,
        backoff_initial_seconds=0.5,
        backoff_max_seconds=1.5,
        sleep=sleep,
        on_drop=drops,
    )
    writer.start()
    try:
        for _ in range(3):
            writer.submit(record(OWNER))
        await writer.flush()  # returns: the batch was given up on, not stuck
        assert sleeps == [0.5, 1.0, 1.5]
        assert writer.stats.dropped_write_failed == 3
        assert drops.calls == [("write_failed", 3)]
        # The task survived: once the database is there, writing works again.
        await migrate.upgrade(raw_database)
        await _add_owner(raw_database)
        writer.submit(record(OWNER))
        await writer.flush()
        assert await count_rows(raw_database) == 1
    finally:
        await writer.stop()


async def test_rows_refused_for_their_data_do_not_take_the_batch_down(database: Database) -> None:
    """A user deleted between the call and the write: their row breaks the foreign key. Only it is lost."""
    drops = Drops()
    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME), on_drop=drops)
    writer.start()
    try:
        for i in range(6):
            writer.submit(record("usr_deleted" if i == 2 else OWNER, request_id=f"req_{i}"))
        await writer.flush()
    finally:
        await writer.stop()
    rows = await all_rows(database)
    assert sorted(row.request_id or "" for row in rows) == ["req_0", "req_1", "req_3", "req_4", "req_5"]
    assert writer.stats.dropped_write_failed == 1
    assert drops.calls == [("write_failed", 1)]


async def test_full_queue_drops_and_counts_instead_of_blocking(database: Database) -> None:
    drops = Drops()
    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME), max_queue=5, on_drop=drops)
    accepted = [writer.submit(record(OWNER, request_id=f"req_{i}")) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert writer.stats.dropped_queue_full == 3
    assert drops.calls == [("queue_full", 1)] * 3
    writer.start()
    await writer.stop()
    assert sorted(row.request_id or "" for row in await all_rows(database)) == [f"req_{i}" for i in range(5)]


# --- retention ---------------------------------------------------------------------------------


async def test_purge_removes_only_rows_older_than_the_retention(database: Database) -> None:
    clock = ManualClock(BASE_TIME)
    writer = EpisodicLogWriter(database, clock)
    ages_days = [0, 1, 29, 30, 31, 90, 365]
    for age in ages_days:
        writer.submit(record(OWNER, request_id=f"age_{age}", created_at=BASE_TIME - timedelta(days=age)))
    writer.submit(record(OWNER, request_id="age_30+1s", created_at=BASE_TIME - timedelta(days=30, seconds=1)))
    await writer.flush()
    assert await writer.purge_older_than(30) == 4
    kept = sorted(row.request_id or "" for row in await all_rows(database))
    assert kept == ["age_0", "age_1", "age_29", "age_30"]
    # Time passes: what was 29 days old now falls out too.
    clock.advance(86_400 + 1)
    assert await writer.purge_older_than(30) == 2
    assert sorted(row.request_id or "" for row in await all_rows(database)) == ["age_0", "age_1"]
    assert writer.stats.purged == 6


async def test_writer_purges_periodically_when_retention_is_set(database: Database) -> None:
    clock = ManualClock(BASE_TIME)
    ticks: asyncio.Queue[tuple[float, asyncio.Event]] = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        release = asyncio.Event()
        await ticks.put((seconds, release))
        await release.wait()

    writer = EpisodicLogWriter(database, clock, retention_days=7, purge_interval_seconds=3600, sleep=sleep)
    writer.submit(record(OWNER, request_id="old", created_at=BASE_TIME - timedelta(days=8)))
    writer.submit(record(OWNER, request_id="new", created_at=BASE_TIME - timedelta(days=6)))
    await writer.flush()
    writer.start()
    try:
        seconds, release = await ticks.get()
        assert seconds == 60.0  # the first purge comes soon after start
        assert await count_rows(database) == 2
        release.set()
        seconds, release = await ticks.get()  # purged, now waiting for the next interval
        assert seconds == 3600
        assert [row.request_id for row in await all_rows(database)] == ["new"]
        clock.advance(2 * 86_400)
        release.set()
        await ticks.get()
        assert await count_rows(database) == 0
        assert writer.stats.purged == 2
    finally:
        await writer.stop()


async def test_no_purge_when_retention_is_zero(database: Database) -> None:
    called: list[float] = []

    async def sleep(seconds: float) -> None:
        called.append(seconds)

    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME), retention_days=0, sleep=sleep)
    writer.submit(record(OWNER, created_at=BASE_TIME - timedelta(days=3650)))
    writer.start()
    await writer.flush()
    await writer.stop()
    assert called == []
    assert await count_rows(database) == 1


def _as_dict(r: CallRecord) -> dict[str, Any]:
    return {f.name: getattr(r, f.name) for f in fields(r)}
