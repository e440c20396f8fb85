"""WebSocket fan-out: how fast does one message reach 1,000 connected clients, and how many messages
per second can one busy topic carry to all of them?

Each client is a real WebSocket connection (the ``websockets`` library) to ``/ws``, authenticated
with the admin's API key. The messages are real: workflow runs (one ``transform`` step) executed by
the admin through ``POST /api/v1/workflow/execute``, whose events are published after their
commits. A message's latency is from the event's ``at`` (stamped by the engine just before the
transaction that stores it: commit, publish and fan-out are inside) to its arrival at a client.

* ``latency``: every client follows ``dashboard`` (two messages a run: its start and its end);
  ``--latency-runs`` runs at ``--rate`` runs/s. ``start`` is a run's first message, which nothing
  of its own run precedes (one message fanned out to every client: the target's measure); then
  every message, and the time until a message had reached *every* client;
* ``throughput``: every client follows the admin's feed (``user:<id>``: five messages a run);
  ``--burst-runs`` runs submitted 16 at a time; messages/s on the topic, each to every client
  (= frames/s / clients), from the first submit to the last delivery, and the server's CPU per
  delivered frame (what bounds one core).

Every client must receive every message once and in order (``lost``, ``dup`` columns). Only the
runs' messages (``workflow_execution_*`` events) are counted: ``dashboard`` also carries each
replica's ``metrics_sample`` (every 10 s, its ``at`` the start of the sampled interval) and alert
changes, which are not the runs' and would otherwise count as extra, ten-second-late messages.

Modes:

* ``embedded``: one ``trellis serve`` (SQLite, in-process bus) pinned to CPU 0;
* ``redis``: two ``trellis serve`` replicas sharing a fresh PostgreSQL database and Redis (the Redis
  bus), both pinned to CPU 0, the clients split between them; runs are executed through the first,
  so half of the clients hear them through Redis from the other replica.

The clients and the load run in this process, pinned to CPU 1.

    PYTHONPATH=src .venv/bin/python bench/ws_fanout.py                       # both modes, 1,000 clients
    PYTHONPATH=src .venv/bin/python bench/ws_fanout.py --modes embedded --clients 200 --burst-runs 20

Target: p99 delivery of a message fanned out to 1,000 clients at most 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
from _cpu import own_cpu_seconds, process_cpu_seconds
from _databases import check_postgres, check_redis, delete_redis_prefix, migrated_postgres_database
from _server import Server, find_trellis, server_env

WORKFLOW = "bench-fanout"
DEFINITION = {"steps": [{"id": "a", "type": "transform", "with": {"value": "{{ input.n }}"}}]}
EVENTS_PER_RUN = 5
DASHBOARD = "dashboard"
DASHBOARD_PER_RUN = 2  # a run's start and end
TARGET_P99_MS = 50.0
CONNECT_CONCURRENCY = 50
# How a run's message starts on either topic: ``{"type":...,"component":"dashboard"|"workflow","event":
# "workflow_execution_start|progress|complete"`` (the message's keys come in a fixed order).
RUN_EVENT_MARK = '"event":"workflow_execution_'
# The server's answer to a ``subscribe`` sent by ``switch`` (its client id "in").
SUBSCRIBED_MARK = '"event":"subscribe",'


@dataclass
class Point:
    mode: str
    replicas: int
    clients: int
    connect_s: float
    latency_runs: int
    rate_per_s: float
    # Dashboard messages: a run's start (nothing of its run queued before it: one message fanned out),
    # every message, and the time until a message had reached every client.
    start_p50_ms: float
    start_p99_ms: float
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
    duplicates: int  # more than expected, or out of order
    # This process's CPU (1,000 clients and the load) in % of one core, per phase: near 100 means the
    # clients, not the server, set the pace.
    latency_client_cpu_pct: float
    burst_client_cpu_pct: float
    # This process's longest garbage-collection pause in the latency phase (it delays every reader).
    latency_client_gc_longest_ms: float


class GcPauses:
    """This process's garbage-collection pauses (a full pass over a thousand connections' objects
    stalls every reader at once: it would be counted as the server's latency)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._started) * 1000)


class Client:
    """One connection: counts the runs' messages that arrive on the measured topic and notes each
    one's latency. Frames are not parsed as JSON (a thousand clients in one process: the load
    generator must stay cheap): the topic and its id end the frame, the event's name is in its first
    hundred characters, and the event's ``at`` is its last ``"at"`` key."""

    def __init__(self, ws: ClientConnection, bench: Fanout) -> None:
        self.ws = ws
        self.bench = bench
        self.received = 0
        self.last_id = 0
        self.out_of_order = 0

    async def read(self) -> None:
        async for raw in self.ws:
            assert isinstance(raw, str)
            if self.bench.topic_mark not in raw[-120:]:
                if raw.startswith('{"type":"ack"') and SUBSCRIBED_MARK in raw[:80]:
                    self.bench.subscribed()
                continue  # pings, other answers, the other phase's topic
            if RUN_EVENT_MARK not in raw[:100]:
                continue  # not a run's message: a metrics sample or an alert on the dashboard feed
            now = time.time()
            message_id = int(raw[raw.rindex(":") + 1 : -1])
            if message_id <= self.last_id:
                self.out_of_order += 1
            self.last_id = message_id
            start = raw.rindex('"at":"') + 6
            at = datetime.fromisoformat(raw[start : raw.index('"', start)]).timestamp()
            self.received += 1
            self.bench.delivered(self, message_id, now - at, '"type":"run.queued"' in raw)


class Fanout:
    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.members: list[Client] = []
        self.phase("")

    def phase(self, topic: str) -> None:
        """Measure ``topic`` from now on, from zero."""
        self.topic_mark = f'"topic":"{topic}","id":'  # an event (a reply has its id before its topic)
        self.expected = 0  # messages every client should have had by now
        self.done = 0  # clients that have had them
        self.latencies: list[float] = []
        self.first_latencies: list[float] = []  # a run's first message: nothing of its run before it
        self.slowest: dict[int, float] = {}
        self.all_arrived = asyncio.Event()
        self.last_arrival = 0.0
        self.acks = 0
        self.all_subscribed = asyncio.Event()
        for client in self.members:
            client.received, client.last_id = 0, 0

    def subscribed(self) -> None:
        self.acks += 1
        if self.acks >= self.clients:
            self.all_subscribed.set()

    def expect(self, messages: int) -> None:
        """``messages`` more on the topic (some may have arrived already: execute answers late, so
        the last of them may have reached every client before this is called)."""
        self.expected += messages
        self.done = sum(1 for client in self.members if client.received >= self.expected)
        if self.done < self.clients:
            self.all_arrived.clear()
        else:
            self.all_arrived.set()  # last_arrival: the delivery that completed it, already noted

    def delivered(self, client: Client, message_id: int, latency: float, first: bool) -> None:
        self.latencies.append(latency)
        if first:
            self.first_latencies.append(latency)
        if latency > self.slowest.get(message_id, -1.0):
            self.slowest[message_id] = latency
        self.last_arrival = time.monotonic()
        if client.received == self.expected:
            self.done += 1
            if self.done == self.clients:
                self.all_arrived.set()


async def open_client(url: str, key: str, bench: Fanout) -> Client:
    """A connection, authenticated and subscribed (``compression=None``: as a browser might, it asks
    for no permessage-deflate; the server has it off by default anyway)."""
    ws = await connect(url, open_timeout=30, max_queue=None, ping_interval=None, compression=None)
    await ws.send(json.dumps({"type": "auth", "id": 1, "credential": key}))
    answer = json.loads(await ws.recv())
    if answer["type"] != "ack":
        raise BenchError(f"the server refused a client: {answer}")
    client = Client(ws, bench)
    bench.members.append(client)
    return client


async def execute(http: httpx.AsyncClient, n: int) -> str:
    response = await http.post("/api/v1/workflow/execute", json={"workflow": WORKFLOW, "input": {"n": n}, "wait": 0})
    if response.status_code not in (200, 202):
        raise BenchError(f"execute answered {response.status_code}: {response.text[:300]}")
    run_id: str = response.json()["data"]["id"]
    return run_id


async def switch(clients: list[Client], bench: Fanout, old: str | None, new: str) -> None:
    """Every client leaves ``old`` and follows ``new``, acknowledged by the server before the phase
    starts (a run executed before a client's subscription took effect would be lost to it)."""
    bench.phase("")
    for client in clients:
        if old is not None:
            await client.ws.send(json.dumps({"type": "unsubscribe", "id": "out", "topic": old}))
        await client.ws.send(json.dumps({"type": "subscribe", "id": "in", "topic": new}))
    try:
        await asyncio.wait_for(bench.all_subscribed.wait(), 60)
    except TimeoutError:
        raise BenchError(f"only {bench.acks} of {len(clients)} subscriptions to {new} acknowledged in 60 s") from None
    bench.phase(new)


async def measure(mode: str, servers: list[Server], key: str, args: argparse.Namespace) -> Point:
    headers = {"Authorization": f"Bearer {key}"}
    first = servers[0]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.port}", headers=headers, timeout=60) as http:
        saved = await http.put(f"/api/v1/workflows/{WORKFLOW}", json={"definition": DEFINITION})
        if saved.status_code not in (200, 201):
            raise BenchError(f"saving the workflow answered {saved.status_code}: {saved.text[:300]}")
        me = (await http.get("/api/v1/auth/me")).json()["data"]
        feed = f"user:{me['id']}"
        bench = Fanout(args.clients)
        started = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(n: int) -> Client:
            async with gate:
                server = servers[n % len(servers)]
                return await open_client(f"ws://127.0.0.1:{server.port}/ws", key, bench)

        clients = await asyncio.gather(*(one(n) for n in range(args.clients)))

        async def arrived(seconds: float) -> None:
            try:
                await asyncio.wait_for(bench.all_arrived.wait(), seconds)
            except TimeoutError:
                behind = [c for c in clients if c.received < bench.expected]
                closed = [c.ws.close_code for c in behind if c.ws.close_code is not None]
                tails = "\n".join(
                    line
                    for server in servers
                    for line in server.log_tail(100_000).splitlines()
                    if '"level": "warning"' in line or '"level": "error"' in line
                )[-6_000:]
                raise BenchError(
                    f"{len(behind)} clients still waiting for messages after {seconds:g} s "
                    f"(expected {bench.expected}; closed: {closed[:10]}):\n{tails}"
                ) from None

        connect_s = time.monotonic() - started
        print(f"   {args.clients} clients connected in {connect_s:.1f} s", flush=True)
        # The load generator's own pauses must not count as the server's latency: a full collection
        # over a thousand client connections took up to 86 ms here (each reader waits it out), so
        # what they hold is frozen, and what this process still collects is reported.
        gc.collect()
        gc.freeze()
        pauses = GcPauses()
        readers = [asyncio.create_task(client.read()) for client in clients]
        try:
            # Latency, on the dashboard topic (two messages a run: its start and its end), runs at a
            # steady rate; a few first, not recorded.
            await switch(clients, bench, None, DASHBOARD)
            for n in range(3):
                await execute(http, n)
                bench.expect(DASHBOARD_PER_RUN)
            await arrived(60)
            await switch(clients, bench, DASHBOARD, DASHBOARD)  # counts from zero
            client_cpu, wall = own_cpu_seconds(), time.monotonic()
            for n in range(args.latency_runs):
                await execute(http, n)
                bench.expect(DASHBOARD_PER_RUN)
                await asyncio.sleep(1 / args.rate)  # the pace of the load, not a synchronisation
            await arrived(120)
            latency_client_pct = 100 * (own_cpu_seconds() - client_cpu) / (time.monotonic() - wall)
            client_gc_longest = max(pauses.pauses, default=0.0)
            print(
                f"   this process's garbage collections while measuring latency: {len(pauses.pauses)}, "
                f"longest {client_gc_longest:.1f} ms",
                flush=True,
            )
            first = [x * 1000 for x in bench.first_latencies]
            latencies = [x * 1000 for x in bench.latencies]
            slowest = [x * 1000 for x in bench.slowest.values()]
            latency_missing, latency_disorder = check(clients, bench.expected)

            # Throughput, on the admin's feed (five messages a run): runs submitted 16 at a time.
            await switch(clients, bench, DASHBOARD, feed)
            cpu_before = sum(process_cpu_seconds(s.process.pid) or 0.0 for s in servers if s.process)
            client_cpu = own_cpu_seconds()
            burst_started = time.monotonic()
            submit = asyncio.Semaphore(16)

            async def submit_one(n: int) -> None:
                async with submit:
                    await execute(http, n)
                bench.expect(EVENTS_PER_RUN)

            await asyncio.gather(*(submit_one(n) for n in range(args.burst_runs)))
            await arrived(600)
            elapsed = bench.last_arrival - burst_started
            burst_client_pct = 100 * (own_cpu_seconds() - client_cpu) / elapsed
            cpu_after = sum(process_cpu_seconds(s.process.pid) or 0.0 for s in servers if s.process)
            burst_missing, burst_disorder = check(clients, bench.expected)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*(client.ws.close() for client in clients), return_exceptions=True)
    messages = args.burst_runs * EVENTS_PER_RUN
    frames = messages * args.clients
    return Point(
        mode=mode,
        replicas=len(servers),
        clients=args.clients,
        connect_s=round(connect_s, 2),
        latency_runs=args.latency_runs,
        rate_per_s=args.rate,
        start_p50_ms=round(percentile(first, 50), 2),
        start_p99_ms=round(percentile(first, 99), 2),
        delivery_p50_ms=round(percentile(latencies, 50), 2),
        delivery_p99_ms=round(percentile(latencies, 99), 2),
        all_clients_p50_ms=round(percentile(slowest, 50), 2),
        all_clients_p99_ms=round(percentile(slowest, 99), 2),
        burst_runs=args.burst_runs,
        burst_elapsed_s=round(elapsed, 3),
        topic_messages_per_s=round(messages / elapsed, 1),
        frames_per_s=round(frames / elapsed, 1),
        server_cpu_us_per_frame=round((cpu_after - cpu_before) / frames * 1e6, 2) if cpu_after else None,
        missing=latency_missing + burst_missing,
        duplicates=latency_disorder + burst_disorder,
        latency_client_cpu_pct=round(latency_client_pct, 1),
        burst_client_cpu_pct=round(burst_client_pct, 1),
        latency_client_gc_longest_ms=round(client_gc_longest, 1),
    )


def check(clients: list[Client], expected: int) -> tuple[int, int]:
    """Messages missing, and messages more than expected or out of order, over every client."""
    missing = sum(max(0, expected - client.received) for client in clients)
    extra = sum(max(0, client.received - expected) + client.out_of_order for client in clients)
    return missing, extra


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
            from cryptography.fernet import Fernet

            settings |= {
                "redis_url": args.redis_url,
                "redis_key_prefix": prefix,
                # Replicas sharing a PostgreSQL database share the workflow secret keys.
                "workflow__secret_keys": [Fernet.generate_key().decode()],
            }
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
        "start p50",
        "start p99",
        "p50 ms",
        "p99 ms",
        "all p50",
        "all p99",
        "msg/s topic",
        "frames/s",
        "cpu us/frame",
        "lost",
        "dup",
        "client cpu %",
    ]
    rows = [
        [
            f"{p.mode} x{p.replicas}",
            str(p.clients),
            fmt(p.start_p50_ms, ".1f"),
            fmt(p.start_p99_ms, ".1f"),
            fmt(p.delivery_p50_ms, ".1f"),
            fmt(p.delivery_p99_ms, ".1f"),
            fmt(p.all_clients_p50_ms, ".1f"),
            fmt(p.all_clients_p99_ms, ".1f"),
            fmt(p.topic_messages_per_s, ".0f"),
            fmt(p.frames_per_s, ".0f"),
            fmt(p.server_cpu_us_per_frame, ".1f"),
            str(p.missing),
            str(p.duplicates),
            f"{p.latency_client_cpu_pct:.0f} / {p.burst_client_cpu_pct:.0f}",
        ]
        for p in points
    ]
    print()
    print(render_table(header, rows))
    for p in points:
        verdict = "meets" if p.start_p99_ms <= TARGET_P99_MS else "MISSES"
        print(
            f"{p.mode}: p99 delivery of a message fanned out to {p.clients} clients {p.start_p99_ms:.1f} ms "
            f"{verdict} the {TARGET_P99_MS:.0f} ms target"
        )
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
