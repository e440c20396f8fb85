"""How many durable workflow runs per second, how long from execute to succeeded, and how long a run
whose worker died waits before another worker takes it over?

Throughput and latency: a three-step workflow of ``transform`` steps (``{{ input.n }}``, then
``{{ steps.a.output }}-b``, then ``{{ steps.b.output }}-c``), each submitter looping
``POST /api/v1/workflow/execute`` with ``wait`` on one keep-alive connection (the answer is the
finished run: it counts only if it says ``succeeded`` with the right result), at concurrency 1 and
64, against:

* ``embedded``: one ``trellis serve`` on a fresh SQLite data directory; its in-process worker pool
  runs the steps;
* ``distributed``: a fresh database on the machine's PostgreSQL (migrated by ``trellis migrate``),
  Redis as the work queue, one ``trellis serve`` that runs no steps
  (``TRELLIS_WORKFLOW__EMBEDDED_WORKERS=false``) and two ``trellis worker`` processes.

The baseline, measured the same way against the same server in the same run: ``GET
/api/v1/auth/me`` with the same API key (authentication, rate limiting, the envelope).

Recovery (distributed only): a run whose one step is an ``http.request`` to an endpoint this
benchmark serves, which holds the first request open; the worker holding the run
(``workflow_runs.lease_owner`` = host:pid:random) is killed with SIGKILL, and the time from the kill
until the step's request arrives again (from the other worker) is printed next to the configured
lease: the default one, then a shorter one.

    .venv/bin/python bench/workflow_runs.py                     # 2-3 minutes on a quiet machine
    .venv/bin/python bench/workflow_runs.py --modes embedded    # no PostgreSQL, Redis or recovery
    .venv/bin/python bench/workflow_runs.py --duration 2 --warmup 1 --leases 5 --recovery-trials 1

Needs, for the distributed mode, a PostgreSQL that lets ``--postgres USER@HOST:PORT`` (default
postgres@127.0.0.1:5432) create a database (dropped afterwards) and a Redis (``--redis-url``);
``--queue-url none`` runs the distributed mode without a broker (the workers find new runs by
polling the database: throughput and latency are then the poll's, recovery is unaffected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from _common import (
    HOST,
    NOISE_WARN_PCT,
    REPO,
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
from _cpu import CpuMeter, ProcessTree, Reading, own_cpu_seconds, process_cpu_seconds, wait_until_quiet
from _databases import check_postgres, check_redis, delete_redis_prefix, migrated_postgres_database
from _load import LoadResult, http_request_bytes, run_load
from _server import Server, find_trellis, http_request, running_server, server_env
from _worker import Worker

ME = "/api/v1/auth/me"
EXECUTE = "/api/v1/workflow/execute"
WORKFLOWS = "/api/v1/workflows"
THREE_STEPS = "bench-three-steps"
RECOVER = "bench-recover"
THREE_STEP_DEFINITION = {
    "steps": [
        {"id": "a", "type": "transform", "with": {"value": "{{ input.n }}"}},
        {"id": "b", "type": "transform", "with": {"value": "{{ steps.a.output }}-b"}},
        {"id": "c", "type": "transform", "with": {"value": "{{ steps.b.output }}-c"}},
    ]
}
RUN_REQUEST = "execute 3 steps"
ME_REQUEST = "GET /auth/me"
EXECUTE_WAIT_S = 30  # the server caps it at [workflow] max_execute_wait_seconds (60)
WARMUP_CONCURRENCY = 64
RATE_LIMITS = unlimited_rate_limits("default")  # the workflow routes are in the default class
# The targets this benchmark is checked against.
TARGET_RUNS_PER_S = 300.0
TARGET_P50_MS = 20.0
# The recovery endpoint holds the first request of a run at most this long.
HOLD_MAX_S = 600.0


# --- results ---------------------------------------------------------------------------------------


@dataclass
class Point:
    mode: str
    request: str
    concurrency: int
    done: int
    failed: int
    errors: dict[str, int]
    elapsed_s: float
    per_s: float
    p50_ms: float
    p99_ms: float
    # Runs only: finished_at - created_at as the server recorded them (no HTTP, no waiting for the end).
    server_p50_ms: float | None
    server_p99_ms: float | None
    # CPU time per answered request, in microseconds: the API process, the worker processes, and
    # PostgreSQL (our database's backends) + Redis (the whole server); None where not measured.
    api_cpu_us: float | None
    workers_cpu_us: float | None
    db_cpu_us: float | None
    # This benchmark's own CPU (the load client), and everyone else's, in % of one core.
    client_cpu_pct: float | None
    other_cpu_pct: float | None

    def errors_text(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.errors.items())


@dataclass
class Recovery:
    lease_s: float
    lease_label: str
    trial: int
    killed_worker: str
    # How long the killed worker's lease had left when it died (the database's due_at - now).
    lease_left_at_kill_s: float | None
    # From the SIGKILL until the step's request arrived again (from the other worker).
    recovery_s: float | None
    # From the SIGKILL until the run was succeeded.
    succeeded_after_s: float | None
    status: str
    error: str | None = None


@dataclass
class Skipped:
    what: str
    reason: str


@dataclass
class Report:
    points: list[Point] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    children: dict[str, Any] = field(default_factory=dict)


# --- the children's trellis ------------------------------------------------------------------------


_PROBE = """
import json, sys
import trellis
from trellis.settings import WorkflowSettings
out = {"trellis": trellis.__file__, "lease_default_s": WorkflowSettings().lease_seconds, "queue": "ok"}
url = sys.argv[1]
if url != "none":
    try:
        from trellis.workflows.queue import build_work_queue
        build_work_queue(url, name="trellis-bench-probe")
    except Exception as exc:
        out["queue"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def child_env(data_dir: Path, admin_key: str, **settings: Any) -> dict[str, str]:
    """``server_env``, with this checkout's ``src`` first on ``PYTHONPATH``: the children import the
    trellis this benchmark sits in, whatever the virtual environment's editable install points at."""
    env = server_env(data_dir, admin_key, **settings)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def probe_children(queue_url: str) -> dict[str, Any]:
    """Which trellis the children import, its default lease, and whether it can build the queue."""
    env = child_env(Path(tempfile.gettempdir()) / "trellis-bench-probe", new_admin_key())
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, queue_url], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if probe.returncode != 0:
        raise BenchError(f"cannot import trellis the way the children will:\n{probe.stderr}")
    found: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    if not Path(found["trellis"]).resolve().is_relative_to(REPO / "src"):
        raise BenchError(f"the children would import trellis from {found['trellis']}, not from {REPO / 'src'}")
    return found


# --- setups ----------------------------------------------------------------------------------------


@dataclass
class Setup:
    mode: str
    server: Server
    admin_key: str
    sources: dict[str, Callable[[], Reading]]
    workers: list[Worker] = field(default_factory=list)
    dsn: str | None = None  # PostgreSQL (asyncpg form), distributed only
    new_worker: Callable[[], Worker] | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


@contextlib.contextmanager
def embedded_setup(trellis: Path) -> Iterator[Setup]:
    admin_key = new_admin_key()
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        env = child_env(Path(tmp) / "data", admin_key, rate_limit_enabled=True, rate_limits=RATE_LIMITS)
        print("\n== embedded: trellis serve on SQLite (its in-process pool runs the steps)", flush=True)
        with running_server(trellis, env, Path(tmp)) as server:
            yield Setup("embedded", server, admin_key, {"api": server.cpu_seconds})


def redis_pid(url: str) -> int | None:
    """Redis's process id when it runs on this machine (its CPU counts as the benchmark's)."""
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis.from_url(url, socket_timeout=2) as client:
            pid = int(client.info("server")["process_id"])
    except (RedisError, OSError, KeyError, ValueError):
        return None
    return pid if process_cpu_seconds(pid) is not None else None


@contextlib.contextmanager
def distributed_setup(args: argparse.Namespace, trellis: Path, lease_s: float | None) -> Iterator[Setup]:
    """PostgreSQL, Redis (the queue), one ``trellis serve`` running no steps, ``args.workers``
    ``trellis worker`` processes. ``lease_s`` None: the default lease."""
    queue = args.queue_url != "none"
    queue_name = f"trellis-bench-{uuid.uuid4().hex[:12]}"
    admin_key = new_admin_key()
    settings: dict[str, Any] = {
        "rate_limit_enabled": True,
        "rate_limits": RATE_LIMITS,
        "workflow__embedded_workers": False,
        "workflow__secret_keys": [fernet_key()],
        "workflow__outbound_allow": ["127.0.0.1/32"],
    }
    if queue:
        settings.update(workflow__queue_url=args.queue_url, workflow__queue_name=queue_name)
    if lease_s is not None:
        settings["workflow__lease_seconds"] = lease_s
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trellis-bench-")))
        env = child_env(tmp / "api-data", admin_key, **settings)
        if queue:
            # Whatever keys the queue made carry its (unique) name: delete every key that has it.
            stack.callback(delete_redis_prefix, args.queue_url, f"*{queue_name}")
        lease_text = "default" if lease_s is None else f"{lease_s:g} s"
        broker = f"queue {queue_name} on {args.queue_url}" if queue else "no queue: workers poll the database"
        print(f"\n== distributed: PostgreSQL, {broker}, lease {lease_text}", flush=True)
        url = stack.enter_context(migrated_postgres_database(args.postgres, trellis, env))
        env["TRELLIS_DATABASE_URL"] = url
        database = url.rsplit("/", 1)[1]
        server = stack.enter_context(running_server(trellis, env, tmp))
        workers: list[Worker] = []
        stack.callback(lambda: [worker.stop() for worker in workers])
        started = 0

        def new_worker() -> Worker:
            nonlocal started
            started += 1
            name = f"worker-{started}"
            worker = Worker(trellis, {**env, "TRELLIS_DATA_DIR": str(tmp / f"{name}-data")}, tmp, name)
            workers.append(worker)
            worker.start()
            return worker

        for _ in range(args.workers):
            new_worker()
        print(f"   API on port {server.port}; workers {', '.join(w.worker_id for w in workers)}", flush=True)
        postgres = ProcessTree(roots=[], database_name=database)
        redis = redis_pid(args.redis_url)

        def db_cpu() -> Reading:
            found = postgres.cpu()
            if redis is not None and (seconds := process_cpu_seconds(redis)) is not None:
                found[redis] = seconds
            return found

        def workers_cpu() -> Reading:
            return {w.pid: s for w in workers if w.process is not None and (s := w.cpu_seconds()) is not None}

        yield Setup(
            "distributed",
            server,
            admin_key,
            {"api": server.cpu_seconds, "workers": workers_cpu, "db": db_cpu},
            workers=workers,
            dsn=url.replace("postgresql+asyncpg://", "postgresql://"),
            new_worker=new_worker,
        )


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


# --- throughput and latency ------------------------------------------------------------------------


def api_call(setup: Setup, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, _, raw = http_request(setup.server.port, method, path, body, setup.auth, timeout=EXECUTE_WAIT_S + 30)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw[:300]


def save_workflow(setup: Setup, name: str, definition: dict[str, Any]) -> None:
    status, body = api_call(setup, "POST", WORKFLOWS, {"name": name, "definition": definition})
    if status != 201:
        raise BenchError(f"POST {WORKFLOWS} ({name}) answered {status}: {body}\n{setup.server.log_tail()}")


def check_setup(setup: Setup) -> None:
    status, body = api_call(setup, "GET", ME)
    if status != 200:
        raise BenchError(f"GET {ME} answered {status}: {body}\n{setup.server.log_tail()}")
    save_workflow(setup, THREE_STEPS, THREE_STEP_DEFINITION)
    status, body = api_call(setup, "POST", EXECUTE, {"workflow": THREE_STEPS, "input": {"n": 7}, "wait": 30})
    data = body.get("data") if isinstance(body, dict) else None
    if status != 200 or not data or data.get("status") != "succeeded" or data.get("result") != "7-b-c":
        logs = "\n".join([setup.server.log_tail(), *(w.log_tail() for w in setup.workers)])
        raise BenchError(f"a first run did not succeed with '7-b-c': {status} {body}\n{logs}")


def _elapsed_ms(data: dict[str, Any]) -> float | None:
    try:
        created = datetime.fromisoformat(data["created_at"])
        finished = datetime.fromisoformat(data["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (finished - created).total_seconds() * 1000


def load(setup: Setup, request: str, concurrency: int, duration_s: float) -> tuple[LoadResult, list[float]]:
    """One stretch of load: (the result, the runs' in-server times in ms)."""
    port = setup.server.port
    in_server: list[float] = []
    if request == ME_REQUEST:
        raw = http_request_bytes("GET", ME, port, setup.auth)

        def make(_: int) -> bytes:
            return raw

        def check(_: int, status: int, __: bytes) -> str | None:
            return None if status == 200 else f"HTTP {status}"

    else:
        headers = {**setup.auth, "Content-Type": "application/json"}

        def make(n: int) -> bytes:
            body = json.dumps({"workflow": THREE_STEPS, "input": {"n": n}, "wait": EXECUTE_WAIT_S}).encode()
            return http_request_bytes("POST", EXECUTE, port, headers, body)

        def check(n: int, status: int, body: bytes) -> str | None:
            try:
                data = json.loads(body)["data"]
                run_status = data["status"]
            except (ValueError, KeyError, TypeError):
                return f"HTTP {status}, no run in the answer"
            if status != 200 or run_status != "succeeded":
                return f"HTTP {status}, run {run_status}"
            if data.get("result") != f"{n}-b-c":
                return "wrong result"
            elapsed = _elapsed_ms(data)
            if elapsed is not None:
                in_server.append(elapsed)
            return None

    result = asyncio.run(run_load(port, make, check, concurrency=concurrency, duration_s=duration_s))
    return result, in_server


class QuietWaits:
    """Before each point, wait up to ``--quiet-wait`` s for a quiet machine, but at most
    ``--quiet-budget`` s in all: on a busy machine the run still ends in a few minutes (the
    ``other CPU %`` column says how busy it was)."""

    def __init__(self, per_wait_s: float, budget_s: float) -> None:
        self.per_wait_s = per_wait_s
        self.left_s = budget_s
        self.spent_s = 0.0
        self._told = False

    def wait(self) -> None:
        limit = min(self.per_wait_s, self.left_s)
        if limit <= 0:
            if self.per_wait_s > 0 and not self._told:
                print("   the --quiet-budget is spent: measuring from now on without waiting", flush=True)
                self._told = True
            return
        started = time.monotonic()
        wait_until_quiet(limit)
        spent = time.monotonic() - started
        self.left_s -= spent
        self.spent_s += spent


def per_op_us(seconds: float | None, ops: int) -> float | None:
    return seconds * 1e6 / ops if seconds is not None and ops else None


def measure_throughput(setup: Setup, args: argparse.Namespace) -> list[Point]:
    check_setup(setup)
    requests = (ME_REQUEST, RUN_REQUEST)
    if args.warmup > 0:
        for request in requests:
            print(f"   warm-up  {request} c={WARMUP_CONCURRENCY} {args.warmup:g}s", flush=True)
            load(setup, request, WARMUP_CONCURRENCY, args.warmup)
    points: list[Point] = []
    for concurrency in args.concurrency:
        for request in requests:
            setup.server.wait_until_idle()
            args.quiet.wait()
            with CpuMeter(**setup.sources, client=own_cpu_seconds) as meter:
                result, in_server = load(setup, request, concurrency, args.duration)
            seconds = meter.seconds
            client = seconds.get("client")
            point = Point(
                mode=setup.mode,
                request=request,
                concurrency=concurrency,
                done=result.done,
                failed=result.failed,
                errors=dict(result.errors),
                elapsed_s=result.elapsed_s,
                per_s=result.per_second,
                p50_ms=result.p50_ms,
                p99_ms=result.p99_ms,
                server_p50_ms=percentile(in_server, 50) if in_server else None,
                server_p99_ms=percentile(in_server, 99) if in_server else None,
                api_cpu_us=per_op_us(seconds.get("api"), result.done),
                workers_cpu_us=per_op_us(seconds.get("workers"), result.done),
                db_cpu_us=per_op_us(seconds.get("db"), result.done),
                client_cpu_pct=client * 100 / meter.wall if client is not None and meter.wall > 0 else None,
                other_cpu_pct=meter.other_pct,
            )
            points.append(point)
            errors = f"  ERRORS: {point.errors_text()}" if point.failed else ""
            print(
                f"   measured {request} c={concurrency}: {point.per_s:,.1f}/s, p50 {point.p50_ms:.2f} ms,"
                f" p99 {point.p99_ms:.2f} ms{errors}",
                flush=True,
            )
    return points


# --- recovery ----------------------------------------------------------------------------------------


class HoldEndpoint:
    """``GET /hold?run=<id>`` on 127.0.0.1: the first request of a run is held open until its caller
    goes away (its worker was killed); later ones are answered at once. Each arrival is timed."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.port = 0
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def arrival(self, run_id: str, nth: int, timeout_s: float) -> float:
        """The monotonic time the ``nth`` request of ``run_id`` arrived."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.arrivals.get(run_id, [])) >= nth)
        return self.arrivals[run_id][nth - 1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.monotonic()
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            run_id = parse_qs(urlsplit(target).query).get("run", [""])[0]
            async with self._changed:
                seen = self.arrivals.setdefault(run_id, [])
                seen.append(arrived)
                count = len(seen)
                self._changed.notify_all()
            if count == 1:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HOLD_MAX_S):
                        await reader.read()  # until the caller goes away
                return
            body = json.dumps({"run": run_id, "seen": count}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError):
            pass
        finally:
            writer.close()


async def _run_row(connection: Any, run_id: str) -> Any:
    return await connection.fetchrow(
        "SELECT status, lease_owner, EXTRACT(EPOCH FROM due_at - clock_timestamp()) AS lease_left"
        " FROM workflow_runs WHERE id = $1",
        run_id,
    )


async def _recovery_trials(
    setup: Setup, args: argparse.Namespace, lease_s: float, label: str, hold: HoldEndpoint
) -> list[Recovery]:
    import asyncpg

    assert setup.dsn is not None
    assert setup.new_worker is not None
    definition = {
        "steps": [
            {
                "id": "call",
                "type": "http.request",
                "with": {"url": f"http://{HOST}:{hold.port}/hold?run={{{{ run.id }}}}"},
            }
        ]
    }
    await asyncio.to_thread(save_workflow, setup, f"{RECOVER}-{hold.port}", definition)
    connection = await asyncpg.connect(setup.dsn)
    out: list[Recovery] = []
    try:
        for trial in range(1, args.recovery_trials + 1):
            await asyncio.to_thread(args.quiet.wait)
            status, body = await asyncio.to_thread(
                api_call, setup, "POST", EXECUTE, {"workflow": f"{RECOVER}-{hold.port}", "input": {}}
            )
            if status != 202:
                raise BenchError(f"POST {EXECUTE} (recovery) answered {status}: {body}")
            run_id = body["data"]["id"]
            record = Recovery(lease_s, label, trial, "", None, None, None, "")
            out.append(record)
            try:
                await hold.arrival(run_id, 1, 60)
            except TimeoutError:
                record.error = "the step's request never arrived"
                continue
            row = await _run_row(connection, run_id)
            owner = row["lease_owner"] if row else None
            # host:pid:random, and ":live" after it for a worker holding a liveness lock
            pid = int(owner.removesuffix(":live").split(":")[-2]) if owner else None
            victim = next((w for w in setup.workers if w.process is not None and w.pid == pid), None)
            if victim is None:
                record.error = f"the run's lease owner {owner!r} is not one of this benchmark's workers"
                continue
            record.killed_worker = victim.worker_id
            record.lease_left_at_kill_s = float(row["lease_left"]) if row["lease_left"] is not None else None
            killed_at = time.monotonic()
            victim.kill()
            try:
                again = await hold.arrival(run_id, 2, 3 * lease_s + 60)
                record.recovery_s = again - killed_at
            except TimeoutError:
                record.error = "the step's request did not arrive again"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = await _run_row(connection, run_id)
                record.status = row["status"]
                if record.status in ("succeeded", "failed", "cancelled"):
                    record.succeeded_after_s = time.monotonic() - killed_at if record.status == "succeeded" else None
                    break
                await asyncio.sleep(0.05)
            recovered = f"{record.recovery_s:.2f} s" if record.recovery_s is not None else "-"
            print(
                f"   recovery (lease {label}) trial {trial}: killed {victim.name} with"
                f" {fmt(record.lease_left_at_kill_s, '.2f')} s of lease left; request again after {recovered};"
                f" run {record.status}",
                flush=True,
            )
            await asyncio.to_thread(setup.new_worker)  # back to the same number of workers
    finally:
        await connection.close()
    return out


def measure_recovery(setup: Setup, args: argparse.Namespace, lease_s: float, label: str) -> list[Recovery]:
    async def trials() -> list[Recovery]:
        hold = HoldEndpoint()
        await hold.start()
        try:
            return await _recovery_trials(setup, args, lease_s, label, hold)
        finally:
            await hold.close()

    return asyncio.run(trials())


# --- report ------------------------------------------------------------------------------------------


def _baseline(points: Sequence[Point], point: Point) -> Point | None:
    return next(
        (
            p
            for p in points
            if (p.mode, p.request, p.concurrency) == (point.mode, ME_REQUEST, point.concurrency)
            and point.request != ME_REQUEST
        ),
        None,
    )


def render_points(points: Sequence[Point]) -> str:
    header = (
        "mode",
        "request",
        "conc",
        "done",
        "per s",
        "p50 ms",
        "p99 ms",
        "in-server p50/p99 ms",
        "x auth/me per s",
        "p50 added ms",
        "api CPU us/op",
        "workers CPU us/op",
        "PG+Redis CPU us/op",
        "bench CPU %",
        "other CPU %",
        "errors",
    )
    rows = []
    for point in points:
        base = _baseline(points, point)
        in_server = (
            f"{point.server_p50_ms:.2f} / {point.server_p99_ms:.2f}"
            if point.server_p50_ms is not None and point.server_p99_ms is not None
            else ""
        )
        rows.append(
            (
                point.mode,
                point.request,
                str(point.concurrency),
                f"{point.done:,}",
                f"{point.per_s:,.1f}",
                f"{point.p50_ms:.2f}",
                f"{point.p99_ms:.2f}",
                in_server,
                f"{point.per_s / base.per_s:.3f}" if base and base.per_s else "",
                f"{point.p50_ms - base.p50_ms:+.2f}" if base else "",
                fmt(point.api_cpu_us, ",.0f"),
                fmt(point.workers_cpu_us, ",.0f"),
                fmt(point.db_cpu_us, ",.0f"),
                fmt(point.client_cpu_pct, ".0f"),
                fmt(point.other_cpu_pct, ".0f"),
                point.errors_text() or "0",
            )
        )
    return render_table(header, rows, left=2, left_tail=1)


def render_recoveries(recoveries: Sequence[Recovery]) -> str:
    header = (
        "lease s",
        "trial",
        "lease left at kill s",
        "kill -> request again s",
        "kill -> succeeded s",
        "within lease",
    )
    rows = []
    for r in recoveries:
        within = "-" if r.recovery_s is None else ("yes" if r.recovery_s <= r.lease_s else "NO")
        rows.append(
            (
                r.lease_label,
                str(r.trial),
                fmt(r.lease_left_at_kill_s, ".2f"),
                fmt(r.recovery_s, ".2f") if r.error is None else r.error,
                fmt(r.succeeded_after_s, ".2f"),
                within,
            )
        )
    return render_table(header, rows, left=1, left_tail=1)


def render_verdict(report: Report, args: argparse.Namespace) -> str:
    lines = [
        f"Targets: >= {TARGET_RUNS_PER_S:g} runs/s (at the highest concurrency measured), p50 execute -> succeeded"
        f" < {TARGET_P50_MS:g} ms at concurrency 1, recovery within the configured lease"
    ]
    top = max(args.concurrency)
    for mode in ("embedded", "distributed"):
        runs = [p for p in report.points if p.mode == mode and p.request == RUN_REQUEST]
        for point in runs:
            if point.concurrency == top:
                verdict = "met" if point.per_s >= TARGET_RUNS_PER_S and not point.failed else "MISSED"
                lines.append(f"  {mode}: {point.per_s:,.1f} runs/s at c={top} -> {verdict}")
            if point.concurrency == 1:
                verdict = "met" if point.p50_ms < TARGET_P50_MS and not point.failed else "MISSED"
                lines.append(f"  {mode}: p50 {point.p50_ms:.2f} ms at c=1 -> {verdict}")
    for r in report.recoveries:
        if r.recovery_s is None:
            lines.append(f"  recovery, lease {r.lease_label}, trial {r.trial}: not measured ({r.error})")
        else:
            verdict = "within" if r.recovery_s <= r.lease_s else f"OVER by {r.recovery_s - r.lease_s:.2f} s"
            lines.append(f"  recovery, lease {r.lease_label}, trial {r.trial}: {r.recovery_s:.2f} s -> {verdict}")
    for skipped in report.skipped:
        lines.append(f"  {skipped.what}: NOT MEASURED ({skipped.reason})")
    return "\n".join(lines)


def write_json(report: Report, args: argparse.Namespace, started: datetime) -> Path:
    document: dict[str, Any] = {
        **result_header("workflow_runs", started),
        "children": report.children,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "modes": args.modes,
            "workers": args.workers,
            "queue_url": args.queue_url,
            "leases": args.leases,
            "recovery_trials": args.recovery_trials,
            "quiet_wait_s": args.quiet_wait,
            "quiet_budget_s": args.quiet_budget,
            "quiet_waited_s": args.quiet.spent_s,
            "execute_wait_s": EXECUTE_WAIT_S,
            "rate_limits": RATE_LIMITS,
            "workflow": THREE_STEP_DEFINITION,
        },
        "points": [asdict(p) for p in report.points],
        "recoveries": [asdict(r) for r in report.recoveries],
        "skipped": [asdict(s) for s in report.skipped],
    }
    return write_results("workflow_runs", started, document)


# --- main --------------------------------------------------------------------------------------------


def run_distributed(args: argparse.Namespace, trellis: Path, report: Report) -> None:
    default_lease = float(report.children["lease_default_s"])
    leases = [None if lease == "default" else float(lease) for lease in args.leases] if args.recovery else []
    # The throughput setup runs with the default lease; the default lease's recovery reuses it.
    plan: list[tuple[float | None, bool]] = [(None, True)]
    plan += [(lease, False) for lease in leases if lease is not None and lease != default_lease]
    for lease, throughput in plan:
        if not throughput:
            args.quiet.wait()
        with distributed_setup(args, trellis, lease) as setup:
            if throughput:
                report.points += measure_throughput(setup, args)
                for wanted in leases:
                    if wanted is None or wanted == default_lease:
                        report.recoveries += measure_recovery(
                            setup, args, default_lease, f"{default_lease:g} (default)"
                        )
            else:
                assert lease is not None
                report.recoveries += measure_recovery(setup, args, lease, f"{lease:g}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured point (default 5)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up per request and setup (default 2)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 64], help="submitters at once, per point (default 1 64)"
    )
    parser.add_argument("--modes", nargs="+", choices=("embedded", "distributed"), default=["embedded", "distributed"])
    parser.add_argument("--workers", type=int, default=2, help="trellis worker processes, distributed (default 2)")
    parser.add_argument(
        "--recovery", action=argparse.BooleanOptionalAction, default=True, help="measure recovery (distributed)"
    )
    parser.add_argument(
        "--leases",
        nargs="+",
        default=["default", "5"],
        help="leases (seconds, or `default`: the setting left unset) to measure recovery at (default: default 5)",
    )
    parser.add_argument("--recovery-trials", type=int, default=2, help="kills per lease (default 2)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each point, wait up to this many seconds for other processes to go below "
        f"{NOISE_WARN_PCT:g}%% of a core (0: do not wait)",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=90.0,
        help="seconds of such waiting in all, after which points start at once (default 90)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis (its CPU is counted)")
    parser.add_argument(
        "--queue-url",
        default=None,
        help="the work queue of the distributed mode (default: --redis-url; `none`: no broker, workers poll)",
    )
    parser.add_argument(
        "--postgres", default="postgres@127.0.0.1:5432", help="USER@HOST:PORT allowed to create databases"
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/workflow_runs-*.json")
    args = parser.parse_args(argv)
    if args.queue_url is None:
        args.queue_url = args.redis_url
    args.quiet = QuietWaits(args.quiet_wait, args.quiet_budget)
    if args.duration <= 0 or args.warmup < 0 or args.workers < 2 or args.recovery_trials < 1:
        parser.error(
            "--duration > 0, --warmup >= 0, --workers >= 2 (recovery needs another worker), --recovery-trials >= 1"
        )
    for lease in args.leases:
        if lease != "default":
            try:
                float(lease)
            except ValueError:
                parser.error(f"--leases: {lease!r} is not a number of seconds or `default`")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    started = datetime.now(UTC)
    began = time.monotonic()
    report = Report()
    try:
        trellis = find_trellis()
        report.children = probe_children(args.queue_url)
        report.children["command"] = str(trellis)
        print(f"children import trellis from {Path(report.children['trellis']).parent}", flush=True)
        if "embedded" in args.modes:
            args.quiet.wait()
            with embedded_setup(trellis) as setup:
                report.points += measure_throughput(setup, args)
        if "distributed" in args.modes:
            queue = report.children["queue"]
            if args.queue_url != "none" and queue != "ok":
                reason = f"this checkout cannot build the work queue ({queue})"
                report.skipped.append(Skipped("distributed mode and recovery", reason))
                print(f"\n== distributed: skipped: {reason}", flush=True)
            else:
                check_postgres(args.postgres, "pass --postgres USER@HOST:PORT or --modes embedded")
                check_redis(args.redis_url)
                run_distributed(args, trellis, report)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130

    queue = "no queue (workers poll the database)" if args.queue_url == "none" else f"queue {args.queue_url}"
    print(
        f"\nTrellis workflow runs: {args.duration:g}s per point after {args.warmup:g}s warm-up; distributed ="
        f" PostgreSQL + {queue} + 1 API + {args.workers} workers; in {time.monotonic() - began:.0f}s"
        f" ({args.quiet.spent_s:.0f}s of it waiting for a quiet machine)\n"
    )
    if report.points:
        print(render_points(report.points))
        print(
            "\n  per s, p50, p99: answered requests (runs: execute with wait, succeeded with the right result);"
            "\n  in-server: the run's finished_at - created_at; x auth/me, p50 added: against GET /auth/me at the"
            "\n  same concurrency on the same server; CPU us/op: process CPU per answered request."
        )
    if report.recoveries:
        print()
        print(render_recoveries(report.recoveries))
    print()
    print(render_verdict(report, args))
    failed = [p for p in report.points if p.failed] + [
        r for r in report.recoveries if r.error or r.status != "succeeded"
    ]
    if failed:
        print("\nWARNING: some points had errors or failed recoveries (see above); their numbers are not valid.")
    noisy = [p for p in report.points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT]
    if noisy:
        print(noise_warning(len(noisy)))
    if not args.no_json:
        print(f"\nJSON: {write_json(report, args, started).relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
