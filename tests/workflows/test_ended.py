"""The run-end signal on PostgreSQL: NOTIFY sent with the transaction that ends a run, heard by every
listening process; an API that runs no steps answers ``execute`` with ``wait`` from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import Harness
from tests.workflows.support import execute, save
from trellis.kit.clock import ManualClock
from trellis.storage.database import Database, asyncpg_dsn
from trellis.workflows.ended import PAYLOAD_MAX_CHARS, RunEndListener, announce, payloads


class Heard:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, run_id: str) -> None:
        self.ids.append(run_id)
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


def listener(postgres_url: str, heard: Heard, clock: ManualClock | None = None) -> RunEndListener:
    return RunEndListener(asyncpg_dsn(make_url(postgres_url)), heard, clock or ManualClock())


def test_ids_are_split_into_payloads_postgresql_accepts() -> None:
    ids = [f"run_{index:032x}" for index in range(600)]
    chunks = payloads(ids)
    assert len(chunks) > 1
    assert all(len(chunk) <= PAYLOAD_MAX_CHARS for chunk in chunks)
    assert [part for chunk in chunks for part in chunk.split(",")] == ids
    assert payloads([]) == []


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
