"""The work-queue contract, run against every implementation on a real broker (see conftest.py).

Handlers are held and released with asyncio events; the only timeouts are guards against a hang
(``GUARD``), except where the scenario itself is about time: a handler that runs longer than the
redelivery timeout, and the short window in which ``close`` must still be waiting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import structlog

import trellis
from tests.workflows.queue.conftest import BROKER_URLS, GUARD, UNREACHABLE_URLS, Handled, Queues, TcpProxy
from trellis.kit.errors import Unavailable
from trellis.workflows.queue import RunHandler, WorkQueue, WorkQueueUnavailable, build_work_queue
from trellis.workflows.queue.memory import MemoryWorkQueue
from trellis.workflows.queue.taskiq_queue import TaskiqWorkQueue

REPO = Path(__file__).resolve().parents[3]
SRC = Path(trellis.__file__).resolve().parents[1]


async def submit_all(queue: WorkQueue, run_ids: list[str]) -> None:
    await asyncio.gather(*(queue.submit(run_id) for run_id in run_ids))


async def test_every_submitted_id_reaches_the_handler(queues: Queues) -> None:
    producer, consumer = queues(), queues()
    handled = Handled()
    run_ids = [f"run-{i:03d}" for i in range(200)]

    await producer.open()
    await consumer.consume(handled.record, concurrency=8)
    await submit_all(producer, run_ids)

    await handled.until(lambda: set(run_ids) <= handled.calls.keys())
    assert set(handled.calls) == set(run_ids)
    queues.report_duplicates("every_submitted_id", handled.duplicates)


async def test_at_most_concurrency_handler_calls_run_at_once(queues: Queues) -> None:
    producer, consumer = queues(), queues()
    handled = Handled()
    running = 0
    most = 0
    release: dict[str, asyncio.Event] = {}

    async def hold(run_id: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        release[run_id] = asyncio.Event()
        await handled.record(run_id)
        await release[run_id].wait()
        running -= 1

    run_ids = [f"run-{i}" for i in range(10)]
    await consumer.consume(hold, concurrency=3)
    await submit_all(producer, run_ids)

    # Seven nudges wait in the broker while three calls are held; release them one at a time, each
    # release letting exactly one more start.
    def more_than(count: int) -> Callable[[], bool]:
        return lambda: len(handled.order) > count

    await handled.until(more_than(2))
    for started in range(3, len(run_ids)):
        assert running == 3
        release[handled.order[started - 3]].set()
        await handled.until(more_than(started))
    for event in release.values():
        event.set()
    await handled.until(lambda: set(run_ids) <= handled.calls.keys())
    assert most == 3


async def test_two_consumers_on_one_name_split_the_work(queues: Queues) -> None:
    producer, first, second = queues(), queues(), queues()
    handled = Handled()
    by: dict[str, Counter[str]] = {"first": Counter(), "second": Counter()}
    both_busy = asyncio.Event()

    def handler(mine: str) -> RunHandler:
        async def handle(run_id: str) -> None:
            by[mine][run_id] += 1
            if by["first"] and by["second"]:
                both_busy.set()
            await handled.record(run_id)
            # Each consumer runs one call at a time and holds its first until the other has one
            # too: so the other must have taken a nudge of its own.
            await asyncio.wait_for(both_busy.wait(), GUARD)

        return handle

    run_ids = [f"run-{i:03d}" for i in range(60)]
    await first.consume(handler("first"), concurrency=1)
    await second.consume(handler("second"), concurrency=1)
    await submit_all(producer, run_ids)

    await handled.until(lambda: set(run_ids) <= handled.calls.keys())
    assert set(handled.calls) == set(run_ids)
    assert by["first"]
    assert by["second"]
    queues.report_duplicates("two_consumers", handled.duplicates)


async def test_close_waits_for_running_calls_and_takes_nothing_after(queues: Queues) -> None:
    producer, consumer = queues(), queues()
    handled = Handled()
    release = asyncio.Event()
    finished: list[str] = []

    async def hold(run_id: str) -> None:
        await handled.record(run_id)
        await release.wait()
        finished.append(run_id)

    await consumer.consume(hold, concurrency=2)
    await submit_all(producer, ["a", "b"])
    await handled.until(lambda: len(handled.calls) == 2)

    closing = asyncio.create_task(consumer.close())
    # close must still be waiting for the two held calls (its grace period is 30 s).
    done, _ = await asyncio.wait({closing}, timeout=0.3)
    assert not done
    release.set()
    await asyncio.wait_for(closing, GUARD)
    assert sorted(finished) == ["a", "b"]

    with pytest.raises(WorkQueueUnavailable):
        await consumer.submit("after-close")

    # Nudges submitted after close wait for the next consumer; the closed one never sees them.
    late = [f"late-{i}" for i in range(5)]
    await submit_all(producer, late)
    successor = Handled()
    await queues().consume(successor.record, concurrency=2)
    await successor.until(lambda: set(late) <= successor.calls.keys())
    assert set(handled.calls) == {"a", "b"}


async def test_a_handler_that_raises_does_not_stop_consumption(queues: Queues) -> None:
    producer, consumer = queues(), queues()
    handled = Handled()

    async def flaky(run_id: str) -> None:
        await handled.record(run_id)
        if run_id.startswith("bad"):
            raise ValueError(f"cannot run {run_id}")

    run_ids = [f"{'bad' if i % 2 else 'good'}-{i}" for i in range(20)]
    with structlog.testing.capture_logs() as logs:
        await consumer.consume(flaky, concurrency=1)
        for run_id in run_ids:  # one by one: consumption goes on after each failure
            await producer.submit(run_id)
        await handled.until(lambda: set(run_ids) <= handled.calls.keys())
    failures = [entry for entry in logs if entry["event"] == "work_queue.handler_failed"]
    assert {entry["run_id"] for entry in failures} == {r for r in run_ids if r.startswith("bad")}
    assert all(entry["log_level"] == "error" and entry["exc_info"] for entry in failures)


@pytest.mark.parametrize("kind", list(UNREACHABLE_URLS))
async def test_an_unreachable_broker_fails_fast(kind: str) -> None:
    queue = build_work_queue(UNREACHABLE_URLS[kind], name="unreachable", connect_timeout=1.0, submit_timeout=1.0)
    try:
        attempts: list[Callable[[], Awaitable[None]]] = [
            queue.open,
            lambda: queue.submit("run-1"),
            lambda: queue.consume(Handled().record, concurrency=1),
        ]
        for attempt in attempts:
            started = time.monotonic()
            with pytest.raises(WorkQueueUnavailable) as caught:
                await asyncio.wait_for(attempt(), GUARD)
            assert time.monotonic() - started < 2.0
            assert isinstance(caught.value, Unavailable)
            assert caught.value.status_code == 503
    finally:
        await queue.close()


@pytest.mark.parametrize("kind", list(UNREACHABLE_URLS))
async def test_a_broker_outage_fails_submits_and_both_sides_recover(
    kind: str, proxy_for: Callable[[str], Awaitable[TcpProxy]]
) -> None:
    """The broker goes away under an open producer and a consuming worker (a proxy between them
    drops every connection), then comes back on the same address."""
    proxy = await proxy_for(BROKER_URLS[kind])
    name = f"test-{uuid.uuid4().hex[:12]}"
    producer = build_work_queue(proxy.url, name=name, connect_timeout=2.0, submit_timeout=2.0)
    consumer = build_work_queue(proxy.url, name=name, connect_timeout=2.0)
    handled = Handled()
    try:
        await consumer.consume(handled.record, concurrency=2)
        await producer.submit("before")
        await handled.until(lambda: "before" in handled.calls)

        await proxy.stop()
        started = time.monotonic()
        with pytest.raises(WorkQueueUnavailable):
            await producer.submit("during")
        assert time.monotonic() - started < 2.5

        await proxy.start()
        # Both sides reconnect by themselves; here the caller tries again until the nudge is taken.
        async with asyncio.timeout(GUARD):
            while True:
                try:
                    await producer.submit("after")
                    break
                except WorkQueueUnavailable:
                    await asyncio.sleep(0.1)
        await handled.until(lambda: "after" in handled.calls)
    finally:
        await consumer.close()
        await producer.close()
        remover = build_work_queue(BROKER_URLS[kind], name=name)
        assert isinstance(remover, TaskiqWorkQueue)
        await remover.delete()


async def test_a_call_cut_short_by_close_is_handed_to_another_consumer(queues: Queues) -> None:
    producer, doomed = queues(), queues(grace_period=0.1)
    taken = Handled()

    async def never_finishes(run_id: str) -> None:
        await taken.record(run_id)
        await asyncio.Event().wait()

    await doomed.consume(never_finishes, concurrency=1)
    await producer.submit("run-1")
    await taken.until(lambda: "run-1" in taken.calls)
    await asyncio.wait_for(doomed.close(), GUARD)  # cancels the call after the grace period

    successor = Handled()
    await queues().consume(successor.record, concurrency=1)
    await successor.until(lambda: "run-1" in successor.calls)


async def test_a_dead_consumers_nudge_is_redelivered(broker_queues: Queues) -> None:
    """A consumer process killed while holding a nudge: another consumer gets it after the
    redelivery timeout (Redis: XAUTOCLAIM of idle entries; NATS: ack_wait; RabbitMQ: at once, when
    the dead connection drops). The in-process queue dies with its process: nothing to redeliver."""
    queues = broker_queues
    redeliver_after = 0.5
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(REPO)])}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.workflows.queue.dead_consumer",
        queues.url,
        queues.name,
        str(redeliver_after),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), GUARD)
        assert line == b"consuming\n"
        await queues().submit("run-1")
        line = await asyncio.wait_for(process.stdout.readline(), GUARD)
        assert line == b"run-1\n"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    successor = Handled()
    await queues(redeliver_after=redeliver_after).consume(successor.record, concurrency=1)
    await successor.until(lambda: "run-1" in successor.calls)


async def test_a_long_call_is_not_redelivered_while_its_consumer_lives(timeout_queues: Queues) -> None:
    """A live consumer keeps the nudge it works on: a call three times longer than the redelivery
    timeout is not given to an idle peer."""
    queues = timeout_queues
    redeliver_after = 0.3
    producer = queues()
    worker, peer = queues(redeliver_after=redeliver_after), queues(redeliver_after=redeliver_after)
    by_worker, by_peer = Handled(), Handled()

    async def slow(run_id: str) -> None:
        await by_worker.record(run_id)
        await asyncio.sleep(3 * redeliver_after)  # the scenario: a call longer than the timeout

    await worker.consume(slow, concurrency=1)
    await producer.submit("slow")
    await by_worker.until(lambda: "slow" in by_worker.calls)
    await peer.consume(by_peer.record, concurrency=1)
    await producer.submit("marker")  # the peer is up and taking nudges
    await by_peer.until(lambda: "marker" in by_peer.calls)
    await worker.close()
    assert "slow" not in by_peer.calls
    assert by_worker.calls["slow"] == 1


async def test_same_name_queues_share_nudges_in_process() -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    producer, consumer = MemoryWorkQueue(name), build_work_queue(None, name=name)
    handled = Handled()
    await producer.submit("run-1")
    assert producer.pending == 1
    await consumer.consume(handled.record, concurrency=1)
    await handled.until(lambda: "run-1" in handled.calls)
    await consumer.close()
    await producer.close()


@pytest.mark.parametrize(
    ("url", "name", "message"),
    [
        ("redis://127.0.0.1:6379/0", "has space", "work queue name"),
        ("redis://127.0.0.1:6379/0", "a.b", "work queue name"),
        ("redis://127.0.0.1:6379/0", "", "work queue name"),
        ("kafka://127.0.0.1:9092", "ok", "scheme 'kafka'"),
    ],
)
def test_bad_names_and_schemes_are_refused(url: str, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_work_queue(url, name=name)


async def test_concurrency_must_be_positive(queues: Queues) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await queues().consume(Handled().record, concurrency=0)
