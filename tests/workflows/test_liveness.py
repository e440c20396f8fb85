"""Worker liveness on PostgreSQL (``trellis.workflows.liveness``): a worker's lock lives exactly as
long as its connection, and the runs of a worker whose lock is gone are made due before their
leases run out — only those. Real PostgreSQL; a dead worker is a connection that was closed or
terminated by the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from tests.conftest import Harness
from tests.workflows.support import execute, save
from trellis.storage.database import asyncpg_dsn
from trellis.workflows import repository as repo
from trellis.workflows.liveness import WorkerLiveness
from trellis.workflows.models import WorkflowRun
from trellis.workflows.worker import new_worker_id

TRANSFORM = {"steps": [{"id": "only", "type": "transform", "with": {"value": "{{ input.n }}"}}]}


@pytest.fixture
async def h(make_harness: Callable[..., Any], postgres_url: str) -> AsyncIterator[Harness]:
    # No worker in this process: the test decides who holds which run.
    async with make_harness(database_url=postgres_url, workflow={"embedded_workers": False}) as harness:
        yield harness


def dsn(h: Harness) -> str:
    return asyncpg_dsn(h.runtime.database.engine.url)


async def hold_runs(h: Harness, owners: list[str]) -> dict[str, str]:
    """One queued run per owner, then made running under that owner with a minute of lease left."""
    await save(h, "one", TRANSFORM)
    held: dict[str, str] = {}
    now = h.clock.now()
    for n, owner in enumerate(owners):
        run = await execute(h, "one", {"n": n}, wait=0)
        held[owner] = run["id"]
        async with h.runtime.database.transaction() as session:
            await session.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == run["id"])
                .values(status="running", lease_owner=owner, lease_epoch=1, due_at=now + timedelta(seconds=60))
            )
    return held


async def due_at(h: Harness, run_id: str) -> Any:
    async with h.runtime.database.reader() as session:
        return (await session.execute(select(WorkflowRun.due_at).where(WorkflowRun.id == run_id))).scalar_one()


async def test_only_owners_whose_lock_is_gone_are_found_and_only_their_runs_released(h: Harness) -> None:
    me, alive, dead = (new_worker_id(live=True) for _ in range(3))
    unmarked = new_worker_id()  # holds no lock (SQLite-era or liveness off): left to its lease
    alive_lock = WorkerLiveness(dsn(h), alive, h.clock)
    dead_lock = WorkerLiveness(dsn(h), dead, h.clock)
    assert await alive_lock.ensure()
    assert await dead_lock.ensure()
    held = await hold_runs(h, [me, alive, dead, unmarked])
    lease_end = {owner: await due_at(h, run_id) for owner, run_id in held.items()}
    now = h.clock.now()
    try:
        async with h.runtime.database.transaction() as session:
            assert await repo.free_live_owners(session, me, now) == []  # everyone marked is alive

        await dead_lock.aclose()  # the worker's connection goes with its process
        async with h.runtime.database.transaction() as session:
            free = await repo.free_live_owners(session, me, now)
            assert free == [dead]
            assert await repo.release_runs_of(session, free, now) == {dead: 1}
        assert await due_at(h, held[dead]) == now
        for owner in (me, alive, unmarked):
            assert await due_at(h, held[owner]) == lease_end[owner], owner
        async with h.runtime.database.reader() as session:
            assert await repo.due_runs(session, now, 10) == [held[dead]]

        # Released once: its run is due now, no longer an unexpired lease to judge.
        async with h.runtime.database.transaction() as session:
            assert await repo.free_live_owners(session, me, now) == []
    finally:
        await alive_lock.aclose()


async def test_a_worker_releases_a_dead_owners_runs_at_its_second_look_not_its_first(h: Harness) -> None:
    """A lock free at one look may be a live worker reconnecting; free again a poll later, it is dead.
    And a worker that took its lock back in between keeps its runs."""
    reconnecting, dead = new_worker_id(live=True), new_worker_id(live=True)
    reconnecting_lock = WorkerLiveness(dsn(h), reconnecting, h.clock)
    held = await hold_runs(h, [reconnecting, dead])
    lease_end = await due_at(h, held[reconnecting])
    worker = h.runtime.workflow_parts.new_worker()  # a live-marked worker of its own
    assert worker.liveness is not None
    poll = h.runtime.settings.workflow.poll_seconds
    try:
        assert await worker.release_dead() == {}  # first look: both free, both only suspected
        assert await due_at(h, held[dead]) == lease_end
        assert await worker.release_dead() == {}  # a poll has not passed: no look at all

        assert await reconnecting_lock.ensure()  # took its lock back before the second look
        h.clock.advance(poll)
        assert await worker.release_dead() == {dead: 1}
        assert await due_at(h, held[dead]) == h.clock.now()
        assert await due_at(h, held[reconnecting]) == lease_end
    finally:
        await reconnecting_lock.aclose()
        await worker.stop()


async def test_a_lock_is_held_once_lost_with_its_connection_and_taken_again(h: Harness) -> None:
    worker = new_worker_id(live=True)
    first = WorkerLiveness(dsn(h), worker, h.clock, retry_seconds=5)
    twin = WorkerLiveness(dsn(h), worker, h.clock)
    try:
        assert await first.ensure()
        assert not await twin.ensure()  # another session holds the key
        assert not twin.held

        # The server ends the session (as when the worker's host drops it): the lock is gone.
        async with h.runtime.database.transaction() as session:
            pid = await session.scalar(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :lock"
                    " AND objid = (hashtext(:worker)::bigint & 4294967295)::oid"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"lock": repo.WORKER_ALIVE_LOCK, "worker": worker},
            )
            assert pid is not None
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        async with asyncio.timeout(10):
            while first.held:
                await asyncio.sleep(0.02)

        assert not await first.ensure()  # retried at most every retry_seconds
        h.clock.advance(5)
        assert await first.ensure()
        assert first.held
    finally:
        await first.aclose()
        await twin.aclose()


async def test_an_id_without_the_mark_cannot_hold_a_liveness_lock(h: Harness) -> None:
    with pytest.raises(ValueError, match=":live"):
        WorkerLiveness(dsn(h), new_worker_id(), h.clock)
