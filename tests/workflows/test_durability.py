"""Leases, the reaper, fencing and hand-back, with several workers on one database (each worker plays
a process: its own id, its own engine), on SQLite and PostgreSQL. Time is the injected clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from sqlalchemy import text

from tests.conftest import REDIS_URL, Harness
from tests.workflows.support import ADMIN, events, execute, save, status, steps_by_key
from trellis.workflows.steps.base import StepConfig, StepContext
from trellis.workflows.worker import WorkflowWorker


@dataclass
class Gate:
    """A step type that blocks until released, recording who ran it."""

    entered: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    release: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def step_type(self) -> Any:
        gate = self

        class BlockConfig(StepConfig):
            label: str = ""

        class BlockStep:
            name: ClassVar[str] = "test.block"
            Config: ClassVar[type[StepConfig]] = BlockConfig
            side_effects: ClassVar[bool] = False
            description: ClassVar[str] = "blocks until the test releases it"

            async def run(self, ctx: StepContext, config: BlockConfig) -> Any:
                call = f"{ctx.run_id}:{len(gate.calls)}"
                gate.calls.append(call)
                event = gate.release.setdefault(call, asyncio.Event())
                await gate.entered.put(call)
                await event.wait()
                return {"call": call}

        return BlockStep

    def open(self, call: str) -> None:
        self.release.setdefault(call, asyncio.Event()).set()


BLOCKING = {
    "steps": [
        {"id": "block", "type": "test.block"},
        {"id": "after", "type": "transform", "with": {"value": "{{ steps.block.output.call }}"}},
    ]
}


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Harness]:
    # No embedded pool: the test's own workers are the only ones.
    async with make_harness(database_url=database_url, workflow={"embedded_workers": False}) as harness:
        yield harness


@pytest.fixture
def gate(h: Harness) -> Gate:
    found = Gate()
    h.runtime.workflows.registry.register("test.block", found.step_type())
    return found


async def entered(gate: Gate) -> str:
    return await asyncio.wait_for(gate.entered.get(), 5)


async def stop(*workers: WorkflowWorker) -> None:
    for worker in workers:
        await worker.stop()


async def test_a_dead_workers_run_is_taken_over_and_the_zombie_writes_nothing(h: Harness, gate: Gate) -> None:
    await save(h, "blocking", BLOCKING)
    run = await execute(h, "blocking", wait=0)
    a, b = h.runtime.new_workflow_worker("A"), h.runtime.new_workflow_worker("B")
    try:
        await a.poll()
        first = await entered(gate)
        assert (await status(h, run["id"]))["status"] == "running"
        # A stops renewing (stalled, or dead): once the lease has passed, B's poll (the reaper) takes over.
        h.clock.advance(h.runtime.settings.workflow.lease_seconds + 1)
        await b.poll()
        second = await entered(gate)
        # The zombie wakes up and finishes its attempt: its writes are refused.
        gate.open(first)
        await asyncio.sleep(0)
        while a.active:
            await asyncio.sleep(0.01)
        detail = await status(h, run["id"])
        assert detail["status"] == "running"
        assert steps_by_key(detail)["block"]["status"] == "running"
        gate.open(second)
        await b.drain()
        while b.active:
            await asyncio.sleep(0.01)
        done = await status(h, run["id"])
        assert done["status"] == "succeeded"
        assert done["result"] == second  # the newer attempt's output, recorded once
        kinds = [e["type"] for e in await events(h, run["id"])]
        assert kinds.count("step.succeeded") == 2  # block (B's) and after
        assert "step.lost" in kinds
        assert [
            e["data"]["epoch"]
            for e in await events(h, run["id"])
            if e["type"].startswith("run.") and "epoch" in e["data"]
        ] == [1, 2]
    finally:
        await stop(a, b)


async def test_a_heartbeat_keeps_the_lease(h: Harness, gate: Gate) -> None:
    await save(h, "blocking", BLOCKING)
    run = await execute(h, "blocking", wait=0)
    a, b = h.runtime.new_workflow_worker("A"), h.runtime.new_workflow_worker("B")
    lease = h.runtime.settings.workflow.lease_seconds
    try:
        await a.poll()
        call = await entered(gate)
        for _ in range(4):  # well past one lease in all, renewed every half lease
            h.clock.advance(lease / 2)
            await a.heartbeat()
            assert await b.poll() == 0
        gate.open(call)
        while a.active:
            await asyncio.sleep(0.01)
        done = await status(h, run["id"])
        assert done["status"] == "succeeded"
        assert steps_by_key(done)["block"]["attempt"] == 1
    finally:
        await stop(a, b)


async def test_a_step_that_keeps_losing_its_worker_ends_failed(make_harness: Callable[..., Any]) -> None:
    async with make_harness(workflow={"embedded_workers": False, "max_lost_attempts": 2}) as h:
        gate = Gate()
        h.runtime.workflows.registry.register("test.block", gate.step_type())
        await save(h, "blocking", BLOCKING)
        run = await execute(h, "blocking", wait=0)
        workers = [h.runtime.new_workflow_worker(f"W{n}") for n in range(4)]
        try:
            for worker in workers[:3]:
                await worker.poll()
                await entered(gate)
                h.clock.advance(h.runtime.settings.workflow.lease_seconds + 1)
            await workers[3].drain()
            done = await status(h, run["id"])
            assert done["status"] == "failed"
            assert done["error"]["cause"]["type"] == "worker_lost"
            assert "lost with its worker 3 times" in done["error"]["message"]
        finally:
            for call in gate.calls:
                gate.open(call)
            await stop(*workers)


async def test_shutdown_hands_the_run_back_at_once(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(
        database_url=database_url, workflow={"embedded_workers": False, "shutdown_grace_seconds": 0}
    ) as h:
        gate = Gate()
        h.runtime.workflows.registry.register("test.block", gate.step_type())
        await save(h, "blocking", BLOCKING)
        run = await execute(h, "blocking", wait=0)
        a, b = h.runtime.new_workflow_worker("A"), h.runtime.new_workflow_worker("B")
        await a.poll()
        await entered(gate)
        await a.stop()  # no clock movement: B may take it at once, not after the lease
        handed = await status(h, run["id"])
        assert handed["status"] == "running"
        assert steps_by_key(handed)["block"]["status"] == "pending"
        await b.poll()
        gate.open(await entered(gate))
        await b.drain()
        while b.active:
            await asyncio.sleep(0.01)
        done = await status(h, run["id"])
        assert done["status"] == "succeeded"
        assert steps_by_key(done)["block"]["attempt"] == 1
        assert "run.handed_back" in [e["type"] for e in await events(h, run["id"])]
        await b.stop()


@pytest.mark.parametrize(("per_user", "total"), [(3, 1000), (100, 3)], ids=["per-user", "global"])
async def test_limits_hold_when_many_workers_claim_at_once(
    make_harness: Callable[..., Any], database_url: str, per_user: int, total: int
) -> None:
    """Twelve due runs, four workers polling at the same moment: exactly the limit's worth start
    (on PostgreSQL the claims race in separate connections: the claim locks make the count exact)."""
    workflow = {"embedded_workers": False, "max_running_per_user": per_user, "max_running_total": total}
    async with make_harness(database_url=database_url, workflow=workflow) as h:
        gate = Gate()
        h.runtime.workflows.registry.register("test.block", gate.step_type())
        await save(h, "blocking", BLOCKING)
        runs = [await execute(h, "blocking", wait=0) for _ in range(12)]
        workers = [h.runtime.new_workflow_worker(name) for name in "ABCD"]
        try:
            await asyncio.gather(*(worker.poll() for worker in workers))
            for _ in range(3):
                await entered(gate)
            await asyncio.gather(*(worker.poll() for worker in workers))
            await asyncio.gather(*(worker.settled() for worker in workers))
            assert gate.entered.empty()
            states = [(await status(h, run["id"]))["status"] for run in runs]
            assert states.count("running") == 3
            assert states.count("queued") == 9
        finally:
            for call in gate.calls:
                gate.open(call)
            await stop(*workers)


async def test_concurrency_per_user_holds_across_workers(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(
        database_url=database_url, workflow={"embedded_workers": False, "max_running_per_user": 1}
    ) as h:
        gate = Gate()
        h.runtime.workflows.registry.register("test.block", gate.step_type())
        await save(h, "blocking", BLOCKING)
        runs = [await execute(h, "blocking", wait=0) for _ in range(2)]
        a, b = h.runtime.new_workflow_worker("A"), h.runtime.new_workflow_worker("B")
        try:
            await asyncio.gather(a.poll(), b.poll())
            first = await entered(gate)
            await a.poll()
            await b.poll()
            assert gate.entered.empty()
            states = sorted([(await status(h, r["id"]))["status"] for r in runs])
            assert states == ["queued", "running"]
            gate.open(first)
            while a.active or b.active:
                await asyncio.sleep(0.01)
            await a.poll()  # the user's slot is free again: the other run is taken now
            second = await entered(gate)
            gate.open(second)
            for run in runs:
                for _ in range(500):
                    if (await status(h, run["id"]))["status"] == "succeeded":
                        break
                    await b.poll()
                    await asyncio.sleep(0.01)
                assert (await status(h, run["id"]))["status"] == "succeeded"
        finally:
            for call in gate.calls:
                gate.open(call)
            await stop(a, b)


async def test_the_database_dropping_every_connection_mid_run_loses_nothing(
    make_harness: Callable[..., Any], postgres_url: str
) -> None:
    """PostgreSQL restarted (every connection cut) while a step runs: the worker cannot record the
    step's end and lets go; once the lease has passed the run is taken again and ends."""
    async with make_harness(database_url=postgres_url, workflow={"embedded_workers": False}) as h:
        gate = Gate()
        h.runtime.workflows.registry.register("test.block", gate.step_type())
        await save(h, "blocking", BLOCKING)
        run = await execute(h, "blocking", wait=0)
        a = h.runtime.new_workflow_worker("A")
        try:
            await a.poll()
            first = await entered(gate)
            async with h.runtime.database.transaction() as session:
                await session.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            gate.open(first)  # the step ends; recording it fails on a dead connection
            while a.active:
                await asyncio.sleep(0.01)
            h.clock.advance(h.runtime.settings.workflow.lease_seconds + 1)
            await a.poll()
            gate.open(await entered(gate))
            await a.drain()
            while a.active:
                await asyncio.sleep(0.01)
            done = await status(h, run["id"])
            assert done["status"] == "succeeded"
            assert steps_by_key(done)["block"]["status"] == "succeeded"
        finally:
            for call in gate.calls:
                gate.open(call)
            await a.stop()


async def test_runs_started_in_process_respect_the_per_user_limit(make_harness: Callable[..., Any]) -> None:
    async with make_harness(workflow={"max_running_per_user": 1}) as h:  # the embedded pool, fast path
        gate = Gate()
        h.runtime.workflows.registry.register("test.block", gate.step_type())
        await save(h, "blocking", BLOCKING)
        runs = [await execute(h, "blocking", wait=0) for _ in range(3)]
        first = await entered(gate)
        states = sorted([(await status(h, r["id"]))["status"] for r in runs])
        assert states == ["queued", "queued", "running"]
        gate.open(first)
        for _ in range(2):
            gate.open(await entered(gate))  # the next starts only when the one before has ended
        for run in runs:
            for _ in range(500):
                if (await status(h, run["id"]))["status"] == "succeeded":
                    break
                await asyncio.sleep(0.01)
            assert (await status(h, run["id"]))["status"] == "succeeded"


async def test_ended_runs_past_retention_are_purged(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url, workflow={"retention_days": 7}) as h:
        await save(h, "quick", {"steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
        old = await execute(h, "quick")
        h.clock.advance(8 * 86_400)
        recent = await execute(h, "quick")
        worker = h.runtime.workflow_worker
        assert worker is not None
        assert await worker.purge() == 1
        gone = await h.client.get(f"/api/v1/workflow/status/{old['id']}", headers=ADMIN)
        assert gone.status_code == 404
        assert (await status(h, recent["id"]))["status"] == "succeeded"
        assert await events(h, recent["id"])


async def test_a_poll_leaves_a_new_run_to_its_nudge_for_the_grace_period(make_harness: Callable[..., Any]) -> None:
    """With a queue, a poll racing the nudge of a run just created would only cost a failed claim:
    polls take a never-claimed run once [workflow] nudge_grace_seconds have passed (a nudge the
    broker lost), not before."""
    workflow = {"embedded_workers": False, "queue_url": REDIS_URL, "queue_name": f"grace-{uuid.uuid4().hex[:8]}"}
    async with make_harness(workflow=workflow) as h:
        await save(h, "quick", {"steps": [{"id": "a", "type": "transform", "with": {"value": "{{ input.n }}"}}]})
        run = await execute(h, "quick", {"n": 7}, wait=0)
        worker = h.runtime.new_workflow_worker("W")
        try:
            assert await worker.poll() == 0
            h.clock.advance(h.runtime.settings.workflow.nudge_grace_seconds + 0.001)
            assert await worker.poll() == 1
            await worker.drain()
            assert (await status(h, run["id"]))["status"] == "succeeded"
        finally:
            await worker.stop()


async def test_runs_start_while_the_broker_is_down(make_harness: Callable[..., Any]) -> None:
    """The queue only accelerates: with the broker unreachable, execute still answers and the run
    starts from the workers' poll of the database."""
    workflow = {"embedded_workers": False, "queue_url": "redis://127.0.0.1:1/0", "poll_seconds": 0.05}
    async with make_harness(workflow=workflow) as h:
        await save(h, "quick", {"steps": [{"id": "a", "type": "transform", "with": {"value": "{{ input.n }}"}}]})
        worker = h.runtime.new_workflow_worker("W")
        worker.start()
        try:
            run = await execute(h, "quick", {"n": 7}, wait=10)
            assert run["status"] == "succeeded"
            assert run["result"] == 7
        finally:
            await worker.stop()
