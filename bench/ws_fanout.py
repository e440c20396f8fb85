"""WebSocket fan-out: how fast does one message reach 1,000 connected clients, and how many messages
per second can one busy topic carry to all of them?

Each client is a real WebSocket connection (the ``websockets`` library) to ``/ws``, authenticated
with the admin's API key and subscribed to one topic, the admin's own feed (``user:<id>``). The
messages are real: workflow runs (one ``transform`` step) executed by the admin through
``POST /api/v1/workflow/execute``, each publishing five events (``run.queued`` ... ``run.succeeded``)
to the feed after their commits. A message's latency is from the event's ``at`` (the time the
engine stamped it, just before the transaction that stores it: commit, publish and fan-out are
inside) to its arrival at a client.

* ``latency``: ``--latency-runs`` runs at ``--rate`` runs/s; p50/p99 over every (client, message)
  delivery, and of the time until a message had reached *every* client;
* ``throughput``: ``--burst-runs`` runs submitted at once (16 at a time); messages/s on the topic,
  each to every client (= frames/s / clients), from the first submit to the last delivery, and the
  server's CPU per delivered frame (what bounds one core).

Modes:

* ``embedded``: one ``trellis serve`` (SQLite, in-process bus) pinned to CPU 0;
* ``redis``: two ``trellis serve`` replicas sharing a fresh PostgreSQL database and Redis (the Redis
  bus), both pinned to CPU 0, the clients split between them; runs are executed through the first,
  so half of the clients hear them through Redis from the other replica.

The clients and the load run in this process, pinned to CPU 1.

    PYTHONPATH=src .venv/bin/python bench/ws_fanout.py                       # both modes, 1,000 clients
    PYTHONPATH=src .venv/bin/python bench/ws_fanout.py --modes embedded --clients 200 --burst-runs 20

Target: p99 fan-out delivery at most 50 ms with 1,000 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from _common import (
    BenchError,
    fmt,
    new_admin_key,
    percentile,
    render_table,
    result_header,
    stop_on_signals,
    unlimited_rate_limits,
    write_results,
)
from _cpu import process_cpu_seconds
from _databases import check_postgres, check_redis, delete_redis_prefix, migrated_postgres_database
from _server import Server, find_trellis, server_env

WORKFLOW = "bench-fanout"
DEFINITION = {"steps": [{"id": "a", "type": "transform", "with": {"value": "{{ input.n }}"}}]}
EVENTS_PER_RUN = 5
TARGET_P99_MS = 50.0
CONNECT_CONCURRENCY = 50


@dataclass
class Point:
    mode: str
    replicas: int
    clients: int
    connect_s: float
    latency_runs: int
    rate_per_s: float
    delivery_p50_ms: float
    delivery_p99_ms: float
    all_clients_p50_ms: float
    all_clients_p99_ms: float
    burst_runs: int
    burst_elapsed_s: float
    topic_messages_per_s: float
    frames_per_s: float
    server_cpu_us_per_frame: float | None
    missing: int
    duplicates: int


class Client:
    """One connection: counts what arrives on the topic, records latencies while asked to."""

    def __init__(self, ws: ClientConnection, topic: str, bench: Fanout) -> None:
        self.ws = ws
        self.topic = topic
        self.bench = bench
        self.seen: set[tuple[str, int]] = set()
        self.duplicates = 0

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message.get("topic") != self.topic:
                continue
            data = message["data"]
            key = (data["run_id"], data["seq"])
            if key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(key)
            self.bench.delivered(key, time.time() - datetime.fromisoformat(data["at"]).timestamp())


class Fanout:
    def __init__(self, clients: int) -> None:
        self.expected_clients = clients
        self.latencies: list[float] = []
        self.slowest: dict[tuple[str, int], float] = {}
        self.reached: dict[tuple[str, int], int] = {}
        self.waiting: set[tuple[str, int]] = set()
        self.all_arrived = asyncio.Event()
        self.last_arrival = 0.0
        self.record = False

    def expect(self, keys: Sequence[tuple[str, int]]) -> None:
        """Wait for these too (some may have reached every client already: execute answers late)."""
        self.waiting |= {key for key in keys if self.reached.get(key, 0) < self.expected_clients}
        if self.waiting:
            self.all_arrived.clear()

    def delivered(self, key: tuple[str, int], latency: float) -> None:
        if self.record:
            self.latencies.append(latency)
            self.slowest[key] = max(self.slowest.get(key, 0.0), latency)
        count = self.reached[key] = self.reached.get(key, 0) + 1
        if count == self.expected_clients:
            self.waiting.discard(key)
            self.last_arrival = time.monotonic()
            if not self.waiting:
                self.all_arrived.set()


async def open_client(url: str, key: str, topic: str, bench: Fanout) -> Client:
    ws = await connect(url, open_timeout=30, max_queue=None, ping_interval=None)
    await ws.send(json.dumps({"type": "auth", "id": 1, "credential": key}))
    await ws.send(json.dumps({"type": "subscribe", "id": 2, "topic": topic}))
    for _ in range(2):
        answer = json.loads(await ws.recv())
        if answer["type"] != "ack":
            raise BenchError(f"the server refused a client: {answer}")
    return Client(ws, topic, bench)


async def execute(http: httpx.AsyncClient, n: int) -> str:
    response = await http.post("/api/v1/workflow/execute", json={"workflow": WORKFLOW, "input": {"n": n}, "wait": 0})
    if response.status_code not in (200, 202):
        raise BenchError(f"execute answered {response.status_code}: {response.text[:300]}")
    run_id: str = response.json()["data"]["id"]
    return run_id


def keys_of(run_id: str) -> list[tuple[str, int]]:
    return [(run_id, seq) for seq in range(1, EVENTS_PER_RUN + 1)]


async def measure(mode: str, servers: list[Server], key: str, args: argparse.Namespace) -> Point:
    headers = {"Authorization": f"Bearer {key}"}
    first = servers[0]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.port}", headers=headers, timeout=60) as http:
        saved = await http.put(f"/api/v1/workflows/{WORKFLOW}", json={"definition": DEFINITION})
        if saved.status_code not in (200, 201):
            raise BenchError(f"saving the workflow answered {saved.status_code}: {saved.text[:300]}")
        me = (await http.get("/api/v1/auth/me")).json()["data"]
        topic = f"user:{me['id']}"
        bench = Fanout(args.clients)
        started = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(n: int) -> Client:
            async with gate:
                server = servers[n % len(servers)]
                return await open_client(f"ws://127.0.0.1:{server.port}/ws", key, topic, bench)

        clients = await asyncio.gather(*(one(n) for n in range(args.clients)))
        connect_s = time.monotonic() - started
        print(f"   {args.clients} clients connected in {connect_s:.1f} s", flush=True)
        readers = [asyncio.create_task(client.read()) for client in clients]
        try:
            # Warm-up: a few runs, not recorded.
            for n in range(3):
                bench.expect(keys_of(await execute(http, n)))
            await asyncio.wait_for(bench.all_arrived.wait(), 60)

            # Latency: runs at a steady rate.
            bench.record = True
            for n in range(args.latency_runs):
                bench.expect(keys_of(await execute(http, n)))
                await asyncio.sleep(1 / args.rate)  # the pace of the load, not a synchronisation
            await asyncio.wait_for(bench.all_arrived.wait(), 120)
            bench.record = False
            latencies = [x * 1000 for x in bench.latencies]
            slowest = [x * 1000 for x in bench.slowest.values()]

            # Throughput: a burst of runs, 16 submitted at a time.
            cpu_before = sum(process_cpu_seconds(s.process.pid) or 0.0 for s in servers if s.process)
            burst_started = time.monotonic()
            submit = asyncio.Semaphore(16)

            async def submit_one(n: int) -> None:
                async with submit:
                    bench.expect(keys_of(await execute(http, n)))

            await asyncio.gather(*(submit_one(n) for n in range(args.burst_runs)))
            await asyncio.wait_for(bench.all_arrived.wait(), 600)
            elapsed = bench.last_arrival - burst_started
            cpu_after = sum(process_cpu_seconds(s.process.pid) or 0.0 for s in servers if s.process)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*(client.ws.close() for client in clients), return_exceptions=True)
    messages = args.burst_runs * EVENTS_PER_RUN
    frames = messages * args.clients
    expected = (3 + args.latency_runs + args.burst_runs) * EVENTS_PER_RUN
    return Point(
        mode=mode,
        replicas=len(servers),
        clients=args.clients,
        connect_s=round(connect_s, 2),
        latency_runs=args.latency_runs,
        rate_per_s=args.rate,
        delivery_p50_ms=round(percentile(latencies, 50), 2),
        delivery_p99_ms=round(percentile(latencies, 99), 2),
        all_clients_p50_ms=round(percentile(slowest, 50), 2),
        all_clients_p99_ms=round(percentile(slowest, 99), 2),
        burst_runs=args.burst_runs,
        burst_elapsed_s=round(elapsed, 3),
        topic_messages_per_s=round(messages / elapsed, 1),
        frames_per_s=round(frames / elapsed, 1),
        server_cpu_us_per_frame=round((cpu_after - cpu_before) / frames * 1e6, 2) if cpu_after else None,
        missing=sum(expected - len(client.seen) for client in clients),
        duplicates=sum(client.duplicates for client in clients),
    )


def run_mode(mode: str, args: argparse.Namespace, trellis: Path) -> Point:
    key = new_admin_key()
    with tempfile.TemporaryDirectory(prefix=f"ws-fanout-{mode}-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        settings: dict[str, Any] = {
            "rate_limits": unlimited_rate_limits("default"),
            "events__queue_size": 10_000,
        }
        replicas = 1
        if mode == "redis":
            prefix = f"bench-ws-{uuid.uuid4().hex[:8]}:"
            stack.callback(delete_redis_prefix, args.redis_url, prefix)
            settings |= {"redis_url": args.redis_url, "redis_key_prefix": prefix}
            env = server_env(workdir / "data", key, **settings)
            database = stack.enter_context(migrated_postgres_database(args.postgres, trellis, env))
            settings["database_url"] = database
            replicas = 2
        servers = []
        for n in range(replicas):
            env = server_env(workdir / "data", key, **settings)
            place = workdir / f"replica-{n}"
            place.mkdir()
            server = Server(trellis, env, place, cpus=0)
            stack.callback(server.stop)
            server.start()
            servers.append(server)
        print(f"== {mode}: {replicas} replica(s) on CPU 0, {args.clients} clients on CPU 1", flush=True)
        return asyncio.run(measure(mode, servers, key, args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=["embedded", "redis"], default=["embedded", "redis"])
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--latency-runs", type=int, default=40)
    parser.add_argument("--rate", type=float, default=2.0, help="runs per second in the latency phase")
    parser.add_argument("--burst-runs", type=int, default=100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgres@127.0.0.1:5432")
    args = parser.parse_args(argv)
    stop_on_signals()
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs two CPUs: the server(s) on CPU 0, the clients on CPU 1")
    os.sched_setaffinity(0, {1})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * args.clients + 1_000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the servers inherit it
    if "redis" in args.modes:
        check_redis(args.redis_url)
        check_postgres(args.postgres, "or use --modes embedded")
    started = datetime.now(UTC)
    trellis = find_trellis()
    points = [run_mode(mode, args, trellis) for mode in args.modes]
    header = [
        "mode",
        "clients",
        "p50 ms",
        "p99 ms",
        "all p50",
        "all p99",
        "msg/s topic",
        "frames/s",
        "cpu us/frame",
        "lost",
        "dup",
    ]
    rows = [
        [
            f"{p.mode} x{p.replicas}",
            str(p.clients),
            fmt(p.delivery_p50_ms, ".1f"),
            fmt(p.delivery_p99_ms, ".1f"),
            fmt(p.all_clients_p50_ms, ".1f"),
            fmt(p.all_clients_p99_ms, ".1f"),
            fmt(p.topic_messages_per_s, ".0f"),
            fmt(p.frames_per_s, ".0f"),
            fmt(p.server_cpu_us_per_frame, ".1f"),
            str(p.missing),
            str(p.duplicates),
        ]
        for p in points
    ]
    print()
    print(render_table(header, rows))
    for p in points:
        verdict = "meets" if p.delivery_p99_ms <= TARGET_P99_MS else "MISSES"
        print(f"{p.mode}: p99 delivery {p.delivery_p99_ms:.1f} ms {verdict} the {TARGET_P99_MS:.0f} ms target")
    path = write_results(
        "ws_fanout", started, {**result_header("ws_fanout", started), "points": [asdict(p) for p in points]}
    )
    print(f"\nresults: {path}")
    return 0 if all(p.missing == 0 and p.duplicates == 0 for p in points) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
