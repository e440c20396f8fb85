"""How many workflow nudges per second one producer submits and one consumer handles, per broker.

For the in-process queue (the baseline) and each broker (Redis Streams, NATS JetStream, RabbitMQ),
in one process and one event loop, on a fresh queue name each:

* **submit 1-by-1**: nudges/s of one producer awaiting each ``submit`` (one API request at a time),
  and its p50/p99 latency;
* **submit 64-way**: nudges/s with 64 ``submit`` calls in flight (many API requests at once);
* **drain c=1 / c=16**: nudges/s one consumer handles from a full queue (``--count`` nudges already
  submitted) with a handler that returns at once, at concurrency 1 and 16;
* **nudge→handler**: with the consumer idle and waiting, the time from ``submit`` to the handler
  being called, one nudge at a time (p50/p99): how soon a worker starts a run;
* **CPU %**: of one core, over the whole backend's run: this process (producer and consumer), the
  broker's server processes, and everything else (noise: above 10 % the numbers include contention).

Producer, consumer and this process's event loop share one core's worth of Python; the broker runs
on the machine too (the other core on a 2-core machine). So the broker numbers are what one API
process and one worker process each get at most, on a small machine, not the brokers' limits.

    .venv/bin/python bench/work_queue.py                      # about a minute
    .venv/bin/python bench/work_queue.py --count 2000 --backends memory redis

Needs the brokers at ``--redis``, ``--nats``, ``--rabbitmq`` (the machine's by default). Each queue
is deleted afterwards. The results are also written to ``bench/results/work_queue-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    NOISE_WARN_PCT,
    fmt,
    noise_warning,
    percentile,
    render_table,
    result_header,
    stop_on_signals,
    write_results,
)
from _cpu import CpuMeter, Reading, own_cpu_seconds, process_cpu_seconds, wait_until_quiet
from trellis.kit.logging import configure_logging
from trellis.workflows.queue import WorkQueue, build_work_queue

DEFAULT_URLS = {
    "memory": "memory://",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
}
E2E_ROUNDS = 300
WINDOW = 64
# The broker's server process, by its /proc/<pid>/comm: its CPU is the broker's, not noise.
BROKER_PROCESSES = {"redis": "redis-server", "nats": "nats-server", "rabbitmq": "beam.smp"}


def broker_cpu(backend: str) -> Callable[[], Reading]:
    """CPU seconds of the broker's server processes on this machine (none for memory)."""
    comm = BROKER_PROCESSES.get(backend)
    pids = []
    for entry in Path("/proc").iterdir():
        if comm and entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))

    def read() -> Reading:
        return {pid: cpu for pid in pids if (cpu := process_cpu_seconds(pid)) is not None}

    return read


class Counter:
    """Counts handler calls; ``reached`` is set at the target."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.reached = asyncio.Event()

    async def handle(self, _run_id: str) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


async def submit_one_by_one(queue: WorkQueue, run_ids: list[str]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    for run_id in run_ids:
        before = time.perf_counter()
        await queue.submit(run_id)
        latencies.append(time.perf_counter() - before)
    return time.perf_counter() - started, latencies


async def submit_windowed(queue: WorkQueue, run_ids: list[str]) -> float:
    window = asyncio.Semaphore(WINDOW)

    async def one(run_id: str) -> None:
        async with window:
            await queue.submit(run_id)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in run_ids))
    return time.perf_counter() - started


async def drain(url: str, name: str, count: int, concurrency: int) -> float:
    """Seconds one consumer takes to handle ``count`` queued nudges."""
    consumer = build_work_queue(url, name=name)
    counter = Counter(count)
    await consumer.consume(counter.handle, concurrency=concurrency)
    started = time.perf_counter()
    await asyncio.wait_for(counter.reached.wait(), 600)
    elapsed = time.perf_counter() - started
    await consumer.close()
    return elapsed


async def nudge_to_handler(producer: WorkQueue, url: str, name: str) -> list[float]:
    consumer = build_work_queue(url, name=name)
    arrived = asyncio.Event()

    async def handle(_run_id: str) -> None:
        arrived.set()

    await consumer.consume(handle, concurrency=1)
    latencies: list[float] = []
    for i in range(E2E_ROUNDS):
        arrived.clear()
        started = time.perf_counter()
        await producer.submit(f"e2e-{i}")
        await asyncio.wait_for(arrived.wait(), 30)
        latencies.append(time.perf_counter() - started)
    await consumer.close()
    return latencies


async def measure(backend: str, url: str, count: int) -> dict[str, Any]:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    producer = build_work_queue(url, name=name)
    await producer.open()
    try:
        with CpuMeter(bench=own_cpu_seconds, broker=broker_cpu(backend)) as meter:
            seconds, latencies = await submit_one_by_one(producer, [f"seq-{i}" for i in range(count)])
            drain_1 = await drain(url, name, count, 1)
            windowed = await submit_windowed(producer, [f"win-{i}" for i in range(count)])
            drain_16 = await drain(url, name, count, 16)
            e2e = await nudge_to_handler(producer, url, name)
    finally:
        await producer.close()
        delete = getattr(producer, "delete", None)
        if delete is not None:
            await delete()
    return {
        "backend": backend,
        "count": count,
        "submit_sequential_per_s": count / seconds,
        "submit_p50_ms": percentile(latencies, 50) * 1000,
        "submit_p99_ms": percentile(latencies, 99) * 1000,
        "submit_windowed_per_s": count / windowed,
        "drain_c1_per_s": count / drain_1,
        "drain_c16_per_s": count / drain_16,
        "nudge_to_handler_p50_ms": percentile(e2e, 50) * 1000,
        "nudge_to_handler_p99_ms": percentile(e2e, 99) * 1000,
        "wall_s": meter.wall,
        "bench_cpu_pct": pct(meter.seconds["bench"], meter.wall),
        "broker_cpu_pct": pct(meter.seconds["broker"], meter.wall),
        "other_cpu_pct": meter.other_pct,
    }


def pct(seconds: float | None, wall: float) -> float | None:
    return None if seconds is None or wall <= 0 else seconds / wall * 100


def table(results: list[dict[str, Any]]) -> str:
    header = [
        "backend",
        "submit 1-by-1/s",
        "p50 ms",
        "p99 ms",
        f"submit {WINDOW}-way/s",
        "drain c=1/s",
        "drain c=16/s",
        "nudge→handler p50 ms",
        "p99 ms",
        "bench CPU %",
        "broker CPU %",
        "other CPU %",
    ]
    rows = [
        [
            r["backend"],
            f"{r['submit_sequential_per_s']:,.0f}",
            f"{r['submit_p50_ms']:.3f}",
            f"{r['submit_p99_ms']:.3f}",
            f"{r['submit_windowed_per_s']:,.0f}",
            f"{r['drain_c1_per_s']:,.0f}",
            f"{r['drain_c16_per_s']:,.0f}",
            f"{r['nudge_to_handler_p50_ms']:.3f}",
            f"{r['nudge_to_handler_p99_ms']:.3f}",
            fmt(r["bench_cpu_pct"], ".0f"),
            fmt(r["broker_cpu_pct"], ".0f"),
            fmt(r["other_cpu_pct"], ".0f"),
        ]
        for r in results
    ]
    return render_table(header, rows)


async def main(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    urls = {**DEFAULT_URLS, "redis": args.redis, "nats": args.nats, "rabbitmq": args.rabbitmq}
    results = []
    for backend in args.backends:
        wait_until_quiet(args.quiet_wait)
        print(f"{backend}: {args.count} nudges per phase ...", flush=True)
        results.append(await measure(backend, urls[backend], args.count))
    print()
    print(table(results))
    noisy = sum(1 for r in results if (r["other_cpu_pct"] or 0) > NOISE_WARN_PCT)
    if noisy:
        print(noise_warning(noisy, "backend(s)"))
    path = write_results("work_queue", started, {**result_header("work_queue", started), "results": results})
    print(f"\nresults: {path}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="nudges per phase (default 5000)")
    parser.add_argument("--backends", nargs="+", choices=list(DEFAULT_URLS), default=list(DEFAULT_URLS))
    parser.add_argument("--redis", default=DEFAULT_URLS["redis"])
    parser.add_argument("--nats", default=DEFAULT_URLS["nats"])
    parser.add_argument("--rabbitmq", default=DEFAULT_URLS["rabbitmq"])
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="seconds to wait for a quiet machine before each backend"
    )
    return parser.parse_args()


if __name__ == "__main__":
    stop_on_signals()
    configure_logging("WARNING", json_output=False)
    sys.exit(asyncio.run(main(parse_args())))
