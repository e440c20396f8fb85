"""GraphQL against REST for the same data, in the same run on the same server.

Starts one ``trellis serve`` (embedded: SQLite, in-process limiter) pinned to one CPU, fills it
through REST (a workflow run, a context with relationships), then loads it from this process
(pinned to another CPU: a closed loop of keep-alive HTTP/1.1 connections, every answer checked)
with each of these, one after the other, with the same API key:

==========================  =======================================================================
workload                    what one operation is
==========================  =======================================================================
status/rest                 GET /api/v1/workflow/status/{id}
status/graphql              POST /graphql ``workflowStatus(id)`` selecting every field REST returns
nested/rest                 GET /api/context/{id}, GET .../relationships, then GET /api/context/{other}
                            for each related context (2 + k requests, one after another)
nested/graphql              POST /graphql ``context(id) { ... relationships { ... other { ... } } }``
nested-one/rest             GET /api/context/{id}/relationships alone (one REST request of the set)
==========================  =======================================================================

and prints operations/s, p50 and p99 per operation, and the server's CPU per operation, at
concurrency 1 (latency) and 16 (throughput), with the ratio of each GraphQL workload to its REST
counterpart. A GraphQL workload and its REST counterparts are measured in alternating rounds
(``--rounds``, 5 by default), so background load on a shared machine falls on both alike. The
claim under test: GraphQL is within 1.5x of REST for the same data (throughput at least 1/1.5 of
REST's and p50 at most 1.5 times REST's).

    .venv/bin/python bench/graphql_vs_rest.py            # 8 s per point in 5 rounds, about 3 minutes
    .venv/bin/python bench/graphql_vs_rest.py --quick    # 3 s per point

Needs ``taskset`` (util-linux) and two CPUs; nothing else (no wrk: the REST side of the nested
workload is several requests per operation, which wrk cannot chain).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    NOISE_WARN_PCT,
    BenchError,
    fmt,
    new_admin_key,
    noise_warning,
    percentile,
    render_table,
    result_header,
    stop_on_signals,
    unlimited_rate_limits,
    write_results,
)
from _cpu import CpuMeter, wait_until_quiet
from _load import Connection, http_request_bytes
from _server import Server, find_trellis, http_request, running_server, server_env

RATE_LIMITS = unlimited_rate_limits("default", "ai")
CONCURRENCIES = (1, 16)
RELATED = 4  # relationships of the context the nested workload reads
TARGET = 1.5

WORKFLOW = {
    "steps": [
        {"id": "greet", "type": "transform", "with": {"value": "Hello, {{ input.name }}!"}},
        {"id": "shout", "type": "transform", "with": {"value": "{{ steps.greet.output | upper }}"}},
        {"id": "both", "type": "transform", "with": {"value": {"a": "{{ steps.greet.output }}"}}},
    ],
    "output": "{{ steps.shout.output }}",
}
# Every field GET /api/v1/workflow/status/{id} answers.
STATUS_QUERY = """query($id: ID!) { workflowStatus(id: $id) {
  id status progress result error output errorDetails workflow version currentStep input cancelRequested
  parentRunId createdAt startedAt finishedAt updatedAt
  steps { key status attempt output error waitingFor startedAt finishedAt }
} }"""
CONTEXT_FIELDS = "id ownerId type content metadata version contentHash source createdAt updatedAt"
NESTED_QUERY = (
    "query($id: ID!) { context(id: $id) { "
    + CONTEXT_FIELDS
    + " relationships { id sourceId targetId relationshipType strength createdAt direction other { "
    + CONTEXT_FIELDS
    + " } } } }"
)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Point:
    workload: str
    concurrency: int
    requests_per_op: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    ops: int
    failed: int
    errors: dict[str, int]
    server_cpu_us_per_op: float | None
    other_cpu_pct: float | None
    latencies_ms: list[float] = field(default_factory=list, repr=False)


# --- load: closed loop of operations, each one or several requests on one keep-alive connection ---


async def run_ops(
    port: int, operation: Callable[[Connection], Any], *, concurrency: int, duration_s: float
) -> tuple[int, int, dict[str, int], list[float], float]:
    """``concurrency`` loops of ``operation`` for ``duration_s``: (done, failed, errors, latencies ms, elapsed s)."""
    connections = [Connection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    done = failed = 0

    async def loop(connection: Connection, deadline: float) -> None:
        nonlocal done, failed
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                problem = await operation(connection)
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                problem = type(exc).__name__
                await connection.close()
            if problem is None:
                done += 1
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failed += 1
                errors[problem] = errors.get(problem, 0) + 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(loop(c, started + duration_s) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return done, failed, errors, latencies, elapsed


class Workloads:
    """The requests of each workload, prebuilt, and the check of each answer."""

    def __init__(self, port: int, key: str, run_id: str, context_id: str, related: Sequence[str]) -> None:
        auth = {"Authorization": f"Bearer {key}"}
        post = {**auth, "Content-Type": "application/json"}
        self.status_rest = http_request_bytes("GET", f"/api/v1/workflow/status/{run_id}", port, auth)
        self.status_graphql = http_request_bytes(
            "POST", "/graphql", port, post, json.dumps({"query": STATUS_QUERY, "variables": {"id": run_id}}).encode()
        )
        self.context_rest = http_request_bytes("GET", f"/api/context/{context_id}", port, auth)
        self.relationships_rest = http_request_bytes("GET", f"/api/context/{context_id}/relationships", port, auth)
        self.related_rest = {other: http_request_bytes("GET", f"/api/context/{other}", port, auth) for other in related}
        self.nested_graphql = http_request_bytes(
            "POST",
            "/graphql",
            port,
            post,
            json.dumps({"query": NESTED_QUERY, "variables": {"id": context_id}}).encode(),
        )
        self.related = list(related)

    @staticmethod
    def _envelope(status: int, body: bytes) -> Any:
        if status != 200:
            raise _Bad(f"HTTP {status}")
        payload = json.loads(body)
        if not payload.get("success"):
            raise _Bad("error envelope")
        return payload["data"]

    @staticmethod
    def _graphql(status: int, body: bytes) -> Any:
        if status != 200:
            raise _Bad(f"HTTP {status}")
        payload = json.loads(body)
        if payload.get("errors"):
            raise _Bad("graphql errors")
        return payload["data"]

    async def status_by_rest(self, connection: Connection) -> str | None:
        try:
            data = self._envelope(*await connection.request(self.status_rest))
        except _Bad as bad:
            return str(bad)
        return None if data["status"] == "succeeded" and len(data["steps"]) == 3 else "wrong data"

    async def status_by_graphql(self, connection: Connection) -> str | None:
        try:
            data = self._graphql(*await connection.request(self.status_graphql))["workflowStatus"]
        except _Bad as bad:
            return str(bad)
        return None if data["status"] == "succeeded" and len(data["steps"]) == 3 else "wrong data"

    async def nested_by_rest(self, connection: Connection) -> str | None:
        try:
            self._envelope(*await connection.request(self.context_rest))
            edges = self._envelope(*await connection.request(self.relationships_rest))
            others = [edge["target_id"] if edge["direction"] == "outgoing" else edge["source_id"] for edge in edges]
            for other in others:
                self._envelope(*await connection.request(self.related_rest[other]))
        except _Bad as bad:
            return str(bad)
        return None if len(others) == RELATED else "wrong data"

    async def nested_by_graphql(self, connection: Connection) -> str | None:
        try:
            data = self._graphql(*await connection.request(self.nested_graphql))["context"]
        except _Bad as bad:
            return str(bad)
        others = [edge["other"] for edge in data["relationships"]]
        return None if len(others) == RELATED and all(o is not None for o in others) else "wrong data"

    async def one_rest_request(self, connection: Connection) -> str | None:
        try:
            edges = self._envelope(*await connection.request(self.relationships_rest))
        except _Bad as bad:
            return str(bad)
        return None if len(edges) == RELATED else "wrong data"


class _Bad(Exception):
    pass


# --- setup through REST ------------------------------------------------------------------------


def call(server: Server, method: str, path: str, key: str, body: dict[str, Any] | None = None) -> Any:
    status, _, raw = http_request(server.port, method, path, body, {"Authorization": f"Bearer {key}"}, timeout=30)
    if status not in (200, 201, 202):
        raise BenchError(f"{method} {path} answered {status}: {raw[:300]!r}\n{server.log_tail()}")
    return json.loads(raw)["data"]


def fill(server: Server, key: str) -> tuple[str, str, list[str]]:
    """A finished run, and a context with ``RELATED`` relationships: (run id, context id, related ids)."""
    call(server, "PUT", "/api/v1/workflows/bench", key, {"definition": WORKFLOW})
    run = call(
        server, "POST", "/api/v1/workflow/execute", key, {"workflow": "bench", "input": {"name": "Ada"}, "wait": 30}
    )
    if run["status"] != "succeeded":
        raise BenchError(f"the setup run ended {run['status']}: {run}")
    related = [
        call(server, "POST", "/api/context", key, {"type": "note", "content": f"related note {i} " * 20})["id"]
        for i in range(RELATED)
    ]
    links = [{"target_context_id": other, "relationship_type": "cites", "strength": 0.5} for other in related]
    body = {"type": "decision", "content": "the decision " * 40, "metadata": {"adr": 7}, "relationships": links}
    context = call(server, "POST", "/api/context", key, body)
    return run["id"], context["id"], related


# --- one run ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """One workload at one concurrency, summed over its rounds."""

    done: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    server_s: float = 0.0
    other_pct: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)


def measure(server: Server, workloads: Workloads, args: argparse.Namespace) -> list[Point]:
    """Each group (a GraphQL workload and the REST workloads it is compared with) is measured in
    ``--rounds`` alternating rounds, so the load other processes put on a shared machine falls on
    both doors alike instead of on whichever ran during a busy moment."""
    groups: list[list[tuple[str, int, Callable[[Connection], Any]]]] = [
        [("status/rest", 1, workloads.status_by_rest), ("status/graphql", 1, workloads.status_by_graphql)],
        [
            ("nested/rest", 2 + RELATED, workloads.nested_by_rest),
            ("nested/graphql", 1, workloads.nested_by_graphql),
            ("nested-one/rest", 1, workloads.one_rest_request),
        ],
    ]
    points: list[Point] = []
    for group in groups:
        if args.warmup > 0:
            for _, _, operation in group:
                asyncio.run(run_ops(server.port, operation, concurrency=16, duration_s=args.warmup))
        for concurrency in CONCURRENCIES:
            tallies = {name: Tally() for name, _, _ in group}
            for _ in range(args.rounds):
                for name, _, operation in group:
                    server.wait_until_idle()
                    if args.quiet_wait > 0:
                        wait_until_quiet(args.quiet_wait)
                    with CpuMeter(server=server.cpu_seconds) as meter:
                        done, failed, errors, latencies, elapsed = asyncio.run(
                            run_ops(
                                server.port,
                                operation,
                                concurrency=concurrency,
                                duration_s=args.duration / args.rounds,
                            )
                        )
                    tally = tallies[name]
                    tally.done += done
                    tally.failed += failed
                    tally.elapsed_s += elapsed
                    tally.server_s += meter.seconds["server"] or 0.0
                    if meter.other_pct is not None:
                        tally.other_pct.append(meter.other_pct)
                    for kind, count in errors.items():
                        tally.errors[kind] = tally.errors.get(kind, 0) + count
                    tally.latencies_ms.extend(latencies)
            for name, requests, _ in group:
                tally = tallies[name]
                point = Point(
                    workload=name,
                    concurrency=concurrency,
                    requests_per_op=requests,
                    ops_per_s=tally.done / tally.elapsed_s if tally.elapsed_s > 0 else 0.0,
                    p50_ms=percentile(tally.latencies_ms, 50),
                    p99_ms=percentile(tally.latencies_ms, 99),
                    ops=tally.done,
                    failed=tally.failed,
                    errors=tally.errors,
                    server_cpu_us_per_op=tally.server_s * 1e6 / tally.done if tally.server_s and tally.done else None,
                    other_cpu_pct=sum(tally.other_pct) / len(tally.other_pct) if tally.other_pct else None,
                    latencies_ms=tally.latencies_ms,
                )
                points.append(point)
                problems = f"  ERRORS: {tally.errors}" if tally.failed else ""
                print(
                    f"   measured {name} c={concurrency}: {point.ops_per_s:,.0f} ops/s, p50 {point.p50_ms:.2f} ms, "
                    f"p99 {point.p99_ms:.2f} ms{problems}",
                    flush=True,
                )
    return points


# --- report ----------------------------------------------------------------------------------------


def _rest_of(points: Sequence[Point], point: Point) -> Point | None:
    kind, _, door = point.workload.partition("/")
    if door != "graphql":
        return None
    return next((p for p in points if p.workload == f"{kind}/rest" and p.concurrency == point.concurrency), None)


def render_points(points: Sequence[Point]) -> str:
    header = (
        "workload",
        "conc",
        "req/op",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "CPU us/op",
        "vs REST ops/s",
        "vs REST p50",
        "other CPU %",
        "failed",
    )
    rows = []
    for point in points:
        rest = _rest_of(points, point)
        rows.append(
            (
                point.workload,
                str(point.concurrency),
                str(point.requests_per_op),
                f"{point.ops_per_s:,.0f}",
                f"{point.p50_ms:.2f}",
                f"{point.p99_ms:.2f}",
                fmt(point.server_cpu_us_per_op, ",.0f"),
                f"{point.ops_per_s / rest.ops_per_s:.2f}x" if rest and rest.ops_per_s else "",
                f"{point.p50_ms / rest.p50_ms:.2f}x" if rest and rest.p50_ms else "",
                fmt(point.other_cpu_pct, ".0f"),
                str(point.failed),
            )
        )
    return render_table(header, rows, left=1)


def render_verdict(points: Sequence[Point]) -> str:
    lines = [f'Claim: "GraphQL is within {TARGET:g}x of REST for the same data" (throughput and p50)']
    for point in points:
        rest = _rest_of(points, point)
        if rest is None or not rest.ops_per_s or not point.ops_per_s:
            continue
        slower = rest.ops_per_s / point.ops_per_s
        later = point.p50_ms / rest.p50_ms
        verdict = "holds" if slower <= TARGET and later <= TARGET else "DOES NOT HOLD"
        lines.append(
            f"  {point.workload.split('/')[0]} c={point.concurrency}: REST/GraphQL throughput {slower:.2f}x, "
            f"GraphQL/REST p50 {later:.2f}x -> {verdict}"
        )
    return "\n".join(lines)


def write_json(points: Sequence[Point], args: argparse.Namespace, started: datetime) -> Path:
    document: dict[str, Any] = {
        **result_header("graphql_vs_rest", started),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "rounds": args.rounds,
            "related": RELATED,
        },
        "points": [{k: v for k, v in asdict(p).items() if k != "latencies_ms"} for p in points],
    }
    return write_results("graphql_vs_rest", started, document)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per workload")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds a point is split into")
    parser.add_argument("--quick", action="store_true", help="3 s points, 1 s warm-ups")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="wait up to this long for a quiet machine")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 3.0, 1.0, 3
    stop_on_signals()
    available = os.sched_getaffinity(0)
    if args.server_cpu not in available or args.client_cpu not in available:
        raise BenchError(f"--server-cpu and --client-cpu must be among the CPUs available {sorted(available)}")
    trellis = find_trellis()
    started = datetime.now(UTC)
    key = new_admin_key()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trellis-bench-")))
        env = server_env(tmp / "data", key, rate_limit_enabled=True, rate_limits=RATE_LIMITS)
        print(f"== starting trellis serve on CPU {args.server_cpu}; load from CPU {args.client_cpu}", flush=True)
        server = stack.enter_context(running_server(trellis, env, tmp, args.server_cpu))
        run_id, context_id, related = fill(server, key)
        os.sched_setaffinity(0, {args.client_cpu})
        workloads = Workloads(server.port, key, run_id, context_id, related)
        points = measure(server, workloads, args)
    print()
    print(render_points(points))
    print()
    print(render_verdict(points))
    noisy = sum(1 for p in points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT)
    if noisy:
        print(noise_warning(noisy))
    print(f"\nresults: {write_json(points, args, started)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
