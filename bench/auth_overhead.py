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
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    NOISE_WARN_PCT,
    REPO,
    BenchError,
    fmt,
    new_admin_key,
    noise_warning,
    render_table,
    result_header,
    stop_on_signals,
    unlimited_rate_limits,
    write_results,
)
from _cpu import CpuMeter, children_cpu_seconds, wait_until_quiet
from _databases import check_redis, delete_redis_prefix, migrated_postgres_database
from _server import Server, find_trellis, http_request, running_server, server_env
from _wrk import FAILED_REQUESTS_WARNING, check_wrk_and_cpus, errors_text, print_measured, run_wrk, wrk_version

HEALTH = "/health"
ME = "/api/v1/auth/me"
ENDPOINTS = (HEALTH, ME)
CONCURRENCIES = (1, 64)
WARMUP_CONCURRENCY = 64
RATE_LIMITS = unlimited_rate_limits("default")
# The claim under test: authentication plus rate limiting add at most this much at p50.
BUDGET_MS = 1.0


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


# --- checks --------------------------------------------------------------------------------------


def check_endpoints(server: Server, auth_header: dict[str, str]) -> None:
    """Both endpoints answer exactly 200 (no redirect), and /auth/me went through the limiter."""
    status, _, body = http_request(server.port, "GET", HEALTH, timeout=5)
    if status != 200:
        raise BenchError(f"GET {HEALTH} answered {status}: {body[:300]!r}")
    status, headers, body = http_request(server.port, "GET", ME, headers=auth_header, timeout=5)
    if status != 200:
        raise BenchError(f"GET {ME} answered {status}: {body[:300]!r}\n{server.log_tail()}")
    if "ratelimit" not in headers:
        raise BenchError(f"GET {ME} has no RateLimit header: is rate limiting on? headers={headers}")


# --- one pass --------------------------------------------------------------------------------


def measure_pass(bench_pass: Pass, args: argparse.Namespace, trellis: Path, key_prefix: str) -> list[Point]:
    admin_key = new_admin_key()
    auth = {"Authorization": f"Bearer {admin_key}"}
    points: list[Point] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="trellis-bench-"))
        data_dir = Path(tmp) / "data"
        env = server_env(
            data_dir, admin_key, log_level=bench_pass.log_level, rate_limit_enabled=True, rate_limits=RATE_LIMITS
        )
        if bench_pass.mode == "redis":
            env.update(TRELLIS_REDIS_URL=args.redis_url, TRELLIS_REDIS_KEY_PREFIX=key_prefix)
        if bench_pass.mode == "postgres":
            env["TRELLIS_DATABASE_URL"] = stack.enter_context(migrated_postgres_database(args.postgres, trellis, env))
        print(f"\n== {bench_pass.label}: starting trellis serve on CPU {args.server_cpu}", flush=True)
        with running_server(trellis, env, Path(tmp), args.server_cpu) as server:
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
                    # wrk has been waited for when the meter stops, so its CPU time is counted.
                    with CpuMeter(server=server.cpu_seconds, wrk=children_cpu_seconds) as meter:
                        result = run_wrk(
                            url, concurrency=concurrency, duration_s=args.duration, headers=headers, cpu=args.client_cpu
                        )
                    server_s = meter.seconds["server"]
                    cpu_us = server_s * 1e6 / result.requests if server_s and result.requests else None
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
                    print_measured(endpoint, concurrency, result, errors_text(point))
    return points


# --- report ----------------------------------------------------------------------------------


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


def render_points(points: Sequence[Point]) -> str:
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
                fmt(point.server_cpu_us_per_req, ",.0f"),
                f"{point.rps / base.rps:.2f}x" if base else "",
                f"{point.p50_ms - base.p50_ms:+.3f}" if base else "",
                fmt(point.other_cpu_pct, ".0f"),
                errors_text(point) or "0",
            )
        )
    return render_table(header, rows, left=3, left_tail=1)


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


def write_json(points: Sequence[Point], args: argparse.Namespace, started: datetime) -> Path:
    document: dict[str, Any] = {
        **result_header("auth_overhead", started),
        "wrk": wrk_version(),
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
    return write_results("auth_overhead", started, document)


# --- main ------------------------------------------------------------------------------------


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    started = datetime.now(UTC)
    key_prefix = f"trellis-bench-{uuid.uuid4().hex[:12]}:"
    passes = [Pass(mode, "WARNING") for mode in args.modes]
    if args.info_pass and "embedded" in args.modes:
        passes.append(Pass("embedded", "INFO"))
    points: list[Point] = []
    try:
        check_wrk_and_cpus(args)
        trellis = find_trellis()
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
    print(render_points(points))
    print()
    print(render_verdict(points))
    failed = [p for p in points if p.non_2xx_3xx or p.socket_errors]
    if failed:
        print(FAILED_REQUESTS_WARNING)
    noisy = [p for p in points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT]
    if noisy:
        print(noise_warning(len(noisy)))
    if not args.no_json:
        print(f"\nJSON: {write_json(points, args, started).relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
