"""What do authentication and rate limiting cost per request?

Starts one ``trellis serve`` per mode (embedded: SQLite + in-process limiter; redis: SQLite +
Redis limiter; postgres: PostgreSQL without Redis, where no auth epoch exists and every API-key
request reads the database), pinned to one CPU, and loads it with ``wrk`` pinned to another CPU. Compares
``GET /health`` (no auth, no database) with ``GET /api/v1/auth/me`` (API-key lookup + rate
limit), at concurrency 1 (unloaded latency) and 64 (saturation), and prints one table.

    .venv/bin/python bench/auth_overhead.py               # ~5 s per point, about 2 minutes
    .venv/bin/python bench/auth_overhead.py --quick       # 2 s per point, no INFO-logging pass

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install -y wrk``) and ``taskset`` (util-linux); the redis
mode needs a Redis server (``--redis-url``, default redis://127.0.0.1:6379/0); the postgres mode
(not measured by default: ``--modes embedded redis postgres``) a PostgreSQL that lets
``--postgres USER@HOST:PORT`` (default postgres@127.0.0.1:5432) create a database, dropped after.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
HOST = "127.0.0.1"
HEALTH = "/health"
ME = "/api/v1/auth/me"
ENDPOINTS = (HEALTH, ME)
CONCURRENCIES = (1, 64)
WARMUP_CONCURRENCY = 64
# Settings cap a bucket at 1,000,000 requests; refilled every second, it never denies here.
RATE_LIMITS = {"admin": {"default": {"capacity": 1_000_000, "period_seconds": 1}}}
# The claim under test: authentication plus rate limiting add at most this much at p50.
BUDGET_MS = 1.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# Above this much CPU used by other processes during a point (in % of one core), say so.
NOISE_WARN_PCT = 10.0
PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """A readable reason the benchmark cannot go on."""


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    """One server start: a backend mode and a log level."""

    mode: str  # "embedded", "redis" or "postgres"
    log_level: str

    @property
    def label(self) -> str:
        return f"{self.mode}/{self.log_level}"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    raw: str

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())


@dataclass
class Point:
    mode: str
    log_level: str
    endpoint: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    # Server CPU time (user + system) divided by requests served: cost per request, free of queueing.
    server_cpu_us_per_req: float | None
    # CPU used on the machine by anything but the server and wrk, in % of one core: noise.
    other_cpu_pct: float | None
    raw: str = field(repr=False)


# --- wrk -------------------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(output: str, percentile: int) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"wrk output has no {percentile}% latency (was --latency passed?):\n{output}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output, re.MULTILINE)
    if rps is None or total is None:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), (int(g) for g in sock.groups()), strict=True)) if sock else {}
    )
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNIT_MS[total.group(3)] / 1000,
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(output, 50),
        p99_ms=_latency_ms(output, 99),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors={k: v for k, v in socket_errors.items() if v},
        raw=output,
    )


def run_wrk(url: str, *, concurrency: int, duration_s: int, headers: Sequence[str], cpu: int) -> WrkResult:
    command = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency"]
    command += ["--timeout", "10s"]
    for header in headers:
        command += ["-H", header]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


# --- the server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _request(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None when unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float | None:
    """CPU time spent on all CPUs, except idle and iowait, since boot."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_until_quiet(max_wait_s: float, threshold_pct: float = NOISE_WARN_PCT) -> None:
    """Between points (server idle): wait, at most ``max_wait_s``, until the machine is quiet."""
    deadline = time.monotonic() + max_wait_s
    told = False
    while True:
        before, started = _machine_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        after = _machine_busy_seconds()
        if before is None or after is None:
            return
        busy_pct = (after - before) / (time.monotonic() - started) * 100
        if busy_pct < threshold_pct:
            return
        if time.monotonic() >= deadline:
            print(f"   machine still busy ({busy_pct:.0f}% of a core); measuring anyway", flush=True)
            return
        if not told:
            print(
                f"   waiting up to {max_wait_s:g}s for other processes to calm down ({busy_pct:.0f}% of a core)",
                flush=True,
            )
            told = True


class CpuMeter:
    """Around one wrk run: the server's CPU time, and the CPU everyone else used (noise)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.server_s: float | None = None
        self.other_pct: float | None = None
        self._before: tuple[float | None, float | None, float, float] = (None, None, 0.0, 0.0)

    def __enter__(self) -> CpuMeter:
        self._before = (self._server.cpu_seconds(), _machine_busy_seconds(), _children_cpu_seconds(), time.monotonic())
        return self

    def __exit__(self, *_: object) -> None:
        server_0, machine_0, wrk_0, wall_0 = self._before
        server_1, machine_1 = self._server.cpu_seconds(), _machine_busy_seconds()
        wrk = _children_cpu_seconds() - wrk_0  # wrk has been waited for, so it is counted here
        wall = time.monotonic() - wall_0
        if server_0 is None or server_1 is None:
            return
        self.server_s = server_1 - server_0
        if machine_0 is not None and machine_1 is not None and wall > 0:
            self.other_pct = max(0.0, (machine_1 - machine_0 - self.server_s - wrk) / wall * 100)


class Server:
    """One ``trellis serve`` pinned to a CPU, in its own process group, with its own data dir."""

    def __init__(self, trellis: Path, env: dict[str, str], cpu: int, workdir: Path) -> None:
        self.port = _free_port()
        self.log_path = workdir / "server.log"
        self._command = ["taskset", "-c", str(cpu), str(trellis), "serve", "--host", HOST, "--port", str(self.port)]
        self._env = env
        self._workdir = workdir
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self._command,
            env=self._env,
            cwd=self._workdir,  # no stray trellis.toml from the caller's directory
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=0,  # Ctrl-C reaches us, not the server: we stop it in order
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"trellis serve exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = _request(self.port, "/ready")
                if status == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"trellis serve was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        return None if self.process is None else _cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def running_server(trellis: Path, env: dict[str, str], cpu: int, workdir: Path) -> Iterator[Server]:
    server = Server(trellis, env, cpu, workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def server_env(
    data_dir: Path, bench_pass: Pass, admin_key: str, redis_url: str | None, key_prefix: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env.update(
        TRELLIS_DATA_DIR=str(data_dir),
        TRELLIS_BOOTSTRAP_ADMIN_KEY=admin_key,
        TRELLIS_JWT_SECRET=secrets.token_hex(20),  # 40 characters
        TRELLIS_LOG_LEVEL=bench_pass.log_level,
        TRELLIS_RATE_LIMIT_ENABLED="true",
        TRELLIS_RATE_LIMITS=json.dumps(RATE_LIMITS),
        TRELLIS_CONFIG=str(data_dir / "no-such-trellis.toml"),
        PYTHONUNBUFFERED="1",
    )
    if bench_pass.mode == "redis":
        assert redis_url is not None
        env.update(TRELLIS_REDIS_URL=redis_url, TRELLIS_REDIS_KEY_PREFIX=key_prefix)
    return env


@contextlib.contextmanager
def postgres_database(postgres: str, trellis: Path, env: dict[str, str]) -> Iterator[str]:
    """A new database on ``postgres`` (USER@HOST:PORT), migrated by ``trellis migrate``; dropped after."""
    import asyncio

    import asyncpg

    name = f"trellis_bench_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(f"postgresql://{postgres}/postgres")
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create a database on {postgres} ({exc}); pass --postgres USER@HOST:PORT") from None
    url = f"postgresql+asyncpg://{postgres}/{name}"
    try:
        migrated = subprocess.run(
            [str(trellis), "migrate"], env={**env, "TRELLIS_DATABASE_URL": url}, capture_output=True, text=True
        )
        if migrated.returncode != 0:
            raise BenchError(f"trellis migrate failed:\n{migrated.stdout}{migrated.stderr}")
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def check_endpoints(server: Server, auth_header: dict[str, str]) -> None:
    """Both endpoints answer exactly 200 (no redirect), and /auth/me went through the limiter."""
    status, _, body = _request(server.port, HEALTH)
    if status != 200:
        raise BenchError(f"GET {HEALTH} answered {status}: {body[:300]!r}")
    status, headers, body = _request(server.port, ME, auth_header)
    if status != 200:
        raise BenchError(f"GET {ME} answered {status}: {body[:300]!r}\n{server.log_tail()}")
    if "ratelimit" not in headers:
        raise BenchError(f"GET {ME} has no RateLimit header: is rate limiting on? headers={headers}")


# --- Redis -----------------------------------------------------------------------------------


def check_redis(url: str) -> None:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except (RedisError, OSError) as exc:
        raise BenchError(
            f"Redis is not reachable at {url} ({exc}). Start it, pass --redis-url, or use --modes embedded."
        ) from None


def delete_redis_prefix(url: str, prefix: str) -> int:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            return int(client.delete(*keys)) if keys else 0
    except (RedisError, OSError) as exc:
        print(f"warning: could not delete Redis keys {prefix}*: {exc}", file=sys.stderr)
        return 0


# --- one pass --------------------------------------------------------------------------------


def measure_pass(bench_pass: Pass, args: argparse.Namespace, trellis: Path, key_prefix: str) -> list[Point]:
    admin_key = "trl_" + secrets.token_urlsafe(32)  # 47 characters
    auth = {"Authorization": f"Bearer {admin_key}"}
    points: list[Point] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="trellis-bench-"))
        data_dir = Path(tmp) / "data"
        env = server_env(data_dir, bench_pass, admin_key, args.redis_url, key_prefix)
        if bench_pass.mode == "postgres":
            env["TRELLIS_DATABASE_URL"] = stack.enter_context(postgres_database(args.postgres, trellis, env))
        print(f"\n== {bench_pass.label}: starting trellis serve on CPU {args.server_cpu}", flush=True)
        with running_server(trellis, env, args.server_cpu, Path(tmp)) as server:
            check_endpoints(server, auth)
            for endpoint in ENDPOINTS:
                url = f"http://{HOST}:{server.port}{endpoint}"
                headers = [f"{k}: {v}" for k, v in auth.items()] if endpoint == ME else []
                if args.warmup > 0:
                    print(f"   warm-up  {endpoint} c={WARMUP_CONCURRENCY} {args.warmup}s", flush=True)
                    run_wrk(
                        url,
                        concurrency=WARMUP_CONCURRENCY,
                        duration_s=args.warmup,
                        headers=headers,
                        cpu=args.client_cpu,
                    )
                for concurrency in CONCURRENCIES:
                    if args.quiet_wait > 0:
                        wait_until_quiet(args.quiet_wait)
                    with CpuMeter(server) as meter:
                        result = run_wrk(
                            url, concurrency=concurrency, duration_s=args.duration, headers=headers, cpu=args.client_cpu
                        )
                    cpu_us = meter.server_s * 1e6 / result.requests if meter.server_s and result.requests else None
                    point = Point(
                        mode=bench_pass.mode,
                        log_level=bench_pass.log_level,
                        endpoint=endpoint,
                        concurrency=concurrency,
                        rps=result.rps,
                        p50_ms=result.p50_ms,
                        p99_ms=result.p99_ms,
                        requests=result.requests,
                        non_2xx_3xx=result.non_2xx_3xx,
                        socket_errors=result.socket_errors,
                        server_cpu_us_per_req=cpu_us,
                        other_cpu_pct=meter.other_pct,
                        raw=result.raw,
                    )
                    points.append(point)
                    errors = f"  ERRORS: {_errors_text(point)}" if _errors_text(point) else ""
                    print(
                        f"   measured {endpoint} c={concurrency}: {result.rps:,.0f} req/s, "
                        f"p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms{errors}",
                        flush=True,
                    )
    return points


# --- report ----------------------------------------------------------------------------------


def _errors_text(point: Point) -> str:
    parts = []
    if point.non_2xx_3xx:
        parts.append(f"{point.non_2xx_3xx} non-2xx")
    parts += [f"{n} {kind}" for kind, n in point.socket_errors.items()]
    return ", ".join(parts)


def _baseline(points: Sequence[Point], point: Point) -> Point | None:
    for other in points:
        if (other.mode, other.log_level, other.endpoint, other.concurrency) == (
            point.mode,
            point.log_level,
            HEALTH,
            point.concurrency,
        ):
            return other
    return None


def render_table(points: Sequence[Point]) -> str:
    header = (
        "mode",
        "log",
        "endpoint",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU us/req",
        "vs /health req/s",
        "p50 added ms",
        "other CPU %",
        "errors",
    )
    rows: list[tuple[str, ...]] = []
    for point in points:
        base = _baseline(points, point) if point.endpoint == ME else None
        rows.append(
            (
                point.mode,
                point.log_level,
                point.endpoint,
                str(point.concurrency),
                f"{point.rps:,.0f}",
                f"{point.p50_ms:.3f}",
                f"{point.p99_ms:.3f}",
                "-" if point.server_cpu_us_per_req is None else f"{point.server_cpu_us_per_req:,.0f}",
                f"{point.rps / base.rps:.2f}x" if base else "",
                f"{point.p50_ms - base.p50_ms:+.3f}" if base else "",
                "-" if point.other_cpu_pct is None else f"{point.other_cpu_pct:.0f}",
                _errors_text(point) or "0",
            )
        )
    right = {3, 4, 5, 6, 7, 8, 9, 10}
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_verdict(points: Sequence[Point]) -> str:
    lines = [f'Claim: "authentication plus rate limiting add at most {BUDGET_MS:g} ms at p50"']
    for point in points:
        base = _baseline(points, point) if point.endpoint == ME else None
        if base is None:
            continue
        added = point.p50_ms - base.p50_ms
        verdict = "holds" if added <= BUDGET_MS else "DOES NOT HOLD"
        cpu = ""
        if point.server_cpu_us_per_req is not None and base.server_cpu_us_per_req is not None:
            cpu = f"; server CPU +{point.server_cpu_us_per_req - base.server_cpu_us_per_req:,.0f} us/request"
        lines.append(
            f"  {point.mode}/{point.log_level} c={point.concurrency}: p50 {added:+.3f} ms -> {verdict}"
            f" (throughput {point.rps / base.rps:.2f}x of /health{cpu})"
        )
    lines.append(
        "  c=1 is the unloaded cost of one request; at c=64 one core is saturated and p50 is mostly"
        " queueing (~64 / req/s), so it grows with the per-request CPU cost."
    )
    return "\n".join(lines)


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for cpu_line in Path("/proc/cpuinfo").read_text().splitlines():
            if cpu_line.startswith("model name"):
                return cpu_line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "unknown"


def write_json(points: Sequence[Point], args: argparse.Namespace, started: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"auth_overhead-{started:%Y%m%dT%H%M%SZ}.json"
    document: dict[str, Any] = {
        "benchmark": "auth_overhead",
        "started_at": started.isoformat(),
        "git": _git_revision(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "wrk": _wrk_version(),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "quiet_wait_s": args.quiet_wait,
            "rate_limits": RATE_LIMITS,
        },
        "points": [asdict(p) for p in points],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --- main ------------------------------------------------------------------------------------


def _find_trellis() -> Path:
    beside = Path(sys.executable).parent / "trellis"
    if beside.exists():
        return beside
    found = shutil.which("trellis")
    if found is None:
        raise BenchError("cannot find the `trellis` command: run this with the project's .venv/bin/python")
    return Path(found)


def check_wrk_and_cpus(args: argparse.Namespace) -> None:
    """wrk and taskset are installed, and ``--server-cpu`` / ``--client-cpu`` are CPUs this process may use."""
    if shutil.which("wrk") is None:
        raise BenchError(
            "wrk is not installed. Install it with `sudo apt-get install -y wrk` (Debian/Ubuntu), "
            "`brew install wrk` (macOS, but taskset pinning is Linux-only), or build it from "
            "https://github.com/wg/wrk."
        )
    if shutil.which("taskset") is None:
        raise BenchError("taskset is not installed: it comes with util-linux (`sudo apt-get install -y util-linux`).")
    available = os.sched_getaffinity(0)
    for name in ("server_cpu", "client_cpu"):
        if getattr(args, name) not in available:
            raise BenchError(
                f"--{name.replace('_', '-')} {getattr(args, name)} is not one of the CPUs available {sorted(available)}"
            )
    if args.server_cpu == args.client_cpu:
        print("warning: server and wrk share one CPU; the numbers will mostly measure contention", file=sys.stderr)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per measured point (default 5; 2 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="seconds of warm-up per endpoint (default 2; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="short points and no extra INFO-logging pass")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("embedded", "redis", "postgres"),
        default=["embedded", "redis"],
        help="backends to measure (postgres: PostgreSQL without Redis)",
    )
    parser.add_argument(
        "--info-pass",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure embedded mode with TRELLIS_LOG_LEVEL=INFO (default: on, off with --quick)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each point, wait up to this many seconds for other processes to go below "
        f"{NOISE_WARN_PCT:g}%% of a core (0: do not wait)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the redis mode")
    parser.add_argument(
        "--postgres",
        default="postgres@127.0.0.1:5432",
        help="USER@HOST:PORT allowed to create databases (postgres mode)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU wrk is pinned to (default 1)")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/auth_overhead-*.json")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2 if args.quick else 5
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.info_pass is None:
        args.info_pass = not args.quick
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 and --warmup at least 0 (whole seconds: wrk takes integers)")
    return args


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    # Unwinds through every `finally`, so servers are stopped and Redis keys deleted.
    print(f"\n{signal.Signals(signum).name}: stopping servers", file=sys.stderr)
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    started = datetime.now(UTC)
    key_prefix = f"trellis-bench-{uuid.uuid4().hex[:12]}:"
    passes = [Pass(mode, "WARNING") for mode in args.modes]
    if args.info_pass and "embedded" in args.modes:
        passes.append(Pass("embedded", "INFO"))
    points: list[Point] = []
    try:
        check_wrk_and_cpus(args)
        trellis = _find_trellis()
        if "redis" in args.modes:
            check_redis(args.redis_url)
        try:
            for bench_pass in passes:
                points += measure_pass(bench_pass, args, trellis, key_prefix)
        finally:
            if "redis" in args.modes:
                delete_redis_prefix(args.redis_url, key_prefix)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130

    print(
        f"\nTrellis auth overhead: wrk -t1 on CPU {args.client_cpu}, one `trellis serve` on CPU "
        f"{args.server_cpu}, {args.duration}s per point after {args.warmup}s warm-up per endpoint\n"
    )
    print(render_table(points))
    print()
    print(render_verdict(points))
    failed = [p for p in points if p.non_2xx_3xx or p.socket_errors]
    if failed:
        print("\nWARNING: some points had failed requests (see the errors column); their numbers are not valid.")
    noisy = [p for p in points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT]
    if noisy:
        print(
            f"\nWARNING: other processes used more than {NOISE_WARN_PCT:g}% of a core during {len(noisy)} point(s)"
            " (other CPU % column): those numbers include contention; rerun on a quiet machine."
        )
    if not args.no_json:
        print(f"\nJSON: {write_json(points, args, started).relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
