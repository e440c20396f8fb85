"""The run-end signal on PostgreSQL: NOTIFY sent with the transaction that ends a run, heard by every
listening process; an API that runs no steps answers ``execute`` with ``wait`` from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import Harness
from tests.workflows.support import execute, save, status
from trellis.kit.clock import ManualClock
from trellis.storage.database import Database, asyncpg_dsn
from trellis.workflows.ended import PAYLOAD_MAX_CHARS, RunEndListener, announce, decode, entries, payloads
from trellis.workflows.models import WorkflowRun


class Heard:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.changed = asyncio.Event()

        self.runs: dict[str, WorkflowRun | None] = {}

    def __call__(self, run_id: str, run: WorkflowRun | None = None) -> None:
        self.ids.append(run_id)
        self.runs[run_id] = run
        self.changed.set()

    async def until(self, condition: Callable[[list[str]], bool]) -> None:
        async with asyncio.timeout(10):
            while not condition(self.ids):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[Database]:
    found = Database(postgres_url)
    yield found
    await found.dispose()


def listener(
    postgres_url: str, heard: Heard, clock: ManualClock | None = None, *, wanted: Callable[[str], bool] | None = None
) -> RunEndListener:
    return RunEndListener(
        asyncpg_dsn(make_url(postgres_url)), heard, clock or ManualClock(), wanted=wanted or (lambda _: False)
    )


def ended_run(run_id: str, result: Any = None) -> WorkflowRun:
    moment = datetime(2026, 12, 4, 14, 30, 0, 123456, tzinfo=UTC)
    return WorkflowRun(
        id=run_id,
        owner_id="usr_1",
        workflow_id="wf_1",
        workflow_name="double",
        version=3,
        status="succeeded",
        input={"n": 21},
        result=result,
        error=None,
        progress=1.0,
        current_step="a",
        idempotency_key=None,
        principal={"user_id": "usr_1", "role": "user"},
        cancel_requested=False,
        parent_run_id=None,
        parent_step=None,
        lease_owner=None,
        lease_epoch=1,
        due_at=None,
        event_seq=4,
        created_at=moment,
        started_at=moment,
        finished_at=moment + timedelta(milliseconds=7),
        updated_at=moment + timedelta(milliseconds=7),
    )


def columns(run: WorkflowRun) -> dict[str, Any]:
    return {column.key: getattr(run, column.key) for column in WorkflowRun.__table__.columns}


def test_ids_are_split_into_payloads_postgresql_accepts() -> None:
    ids = [f"run_{index:032x}" for index in range(600)]
    chunks = payloads(ids)
    assert len(chunks) > 1
    assert all(len(chunk) <= PAYLOAD_MAX_CHARS for chunk in chunks)
    assert [run_id for chunk in chunks for run_id, _ in entries(chunk)] == ids
    assert payloads([]) == []


def test_a_run_travels_with_its_id_when_it_fits_and_only_its_id_when_not() -> None:
    small = ended_run("run_small", {"answer": 42, "text": "é ✓"})
    large = ended_run("run_large", "x" * PAYLOAD_MAX_CHARS)
    chunks = payloads([small, "run_bare", large])
    assert all(len(chunk.encode()) < 8000 for chunk in chunks)
    found = [(run_id, snapshot) for chunk in chunks for run_id, snapshot in entries(chunk)]
    assert [run_id for run_id, _ in found] == ["run_small", "run_bare", "run_large"]
    assert found[1][1] is None
    assert found[2][1] is None  # too large: the waiter reads it back
    assert found[0][1] is not None
    assert columns(decode(found[0][1])) == columns(small)


def test_a_payload_of_the_older_shape_is_still_understood() -> None:
    assert list(entries("run_a,run_b")) == [("run_a", None), ("run_b", None)]


async def test_a_committed_end_reaches_every_listener_and_a_rolled_back_one_none(
    database: Database, postgres_url: str
) -> None:
    heard_a, heard_b = Heard(), Heard()
    a, b = listener(postgres_url, heard_a), listener(postgres_url, heard_b)
    try:
        assert await a.ensure()
        assert await b.ensure()
        with pytest.raises(RuntimeError):
            async with database.transaction() as session:
                await announce(session, ["run_rolled_back"])
                raise RuntimeError("the transaction fails")
        many = [f"run_{index:032x}" for index in range(600)]  # more than one payload
        async with database.transaction() as session:
            await announce(session, ["run_committed", *many])
        for heard in (heard_a, heard_b):
            # Notifications arrive in commit order: once the last id is here, the rolled-back one
            # would have been too.
            await heard.until(lambda ids: many[-1] in ids)
            assert heard.ids == ["run_committed", *many]
        assert a.received == len(many) + 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_listener_decodes_the_runs_it_waits_for_and_only_those(database: Database, postgres_url: str) -> None:
    heard = Heard()
    signal = listener(postgres_url, heard, wanted=lambda run_id: run_id == "run_awaited")
    awaited, other = ended_run("run_awaited", [1, 2]), ended_run("run_other", "ok")
    try:
        assert await signal.ensure()
        async with database.transaction() as session:
            await announce(session, [awaited, other, "run_id_only"])
        await heard.until(lambda ids: "run_id_only" in ids)
        assert heard.ids == ["run_awaited", "run_other", "run_id_only"]
        received = heard.runs["run_awaited"]
        assert received is not None
        assert columns(received) == columns(awaited)
        assert heard.runs["run_other"] is None  # nobody here waits for it: not decoded
        assert heard.runs["run_id_only"] is None
    finally:
        await signal.aclose()


async def test_a_lost_listening_connection_is_reported_then_listened_again(
    database: Database, postgres_url: str
) -> None:
    heard, clock = Heard(), ManualClock()
    signal = listener(postgres_url, heard, clock)
    try:
        assert await signal.ensure()
        async with database.transaction() as session:
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        async with asyncio.timeout(10):
            while signal.listening:
                await asyncio.sleep(0.01)
        # Reconnecting is throttled: not before retry_seconds have passed since the last attempt.
        clock.advance(1)
        assert not await signal.ensure()
        clock.advance(5)
        assert await signal.ensure()
        async with database.transaction() as session:
            await announce(session, ["run_after"])
        await heard.until(lambda ids: "run_after" in ids)
    finally:
        await signal.aclose()


async def test_an_api_without_workers_hears_the_end_of_a_run_another_process_ran(
    make_harness: Callable[..., Any], postgres_url: str
) -> None:
    steps = {"steps": [{"id": "a", "type": "transform", "with": {"value": "{{ input.n * 2 }}"}}]}
    async with (
        make_harness(database_url=postgres_url, workflow={"embedded_workers": False}) as api,
        make_harness(database_url=postgres_url, workflow={"embedded_workers": False}) as other,
    ):
        api_h: Harness = api
        await save(api_h, "double", steps)
        waiting = asyncio.create_task(execute(api_h, "double", {"n": 21}, wait=30))
        worker = other.runtime.new_workflow_worker("elsewhere")
        try:
            async with asyncio.timeout(10):
                while not await worker.poll():  # the run is created once the request got that far
                    await asyncio.sleep(0.01)
            run = await asyncio.wait_for(waiting, 10)
        finally:
            await worker.stop()
        assert run["status"] == "succeeded"
        assert run["result"] == 42
        run_ends = api_h.runtime.workflow_parts.run_ends
        assert run_ends is not None
        assert run_ends.listening
        assert run_ends.received >= 1
        # Answered from the run the notification carried: the same as the database says.
        stored = await status(api_h, run["id"])
        assert {key: stored[key] for key in run if key in stored} == {key: run[key] for key in run if key in stored}
        assert len([key for key in run if key in stored]) >= 15
