"""What does the model gateway add on top of the model server it calls?

Starts a mock OpenAI-compatible upstream that is not Python (nginx answering every
``POST /v1/chat/completions`` with one fixed chat completion, usage included) and one
``trellis serve`` whose model ``mock`` points at it. Loads, with ``wrk``, in the same run:

* the upstream directly (the baseline: what a client would see without the gateway);
* ``POST /v1/chat/completions`` through Trellis (OpenAI-compatible door);
* ``POST /api/v1/ai/chat`` through Trellis (REST door, JSON envelope);

at concurrency 1 (unloaded latency), 32 and 64 (one saturated server core), with authentication,
rate limiting (a budget it never exhausts) and the episodic log on, the response cache off. Prints
one table and a verdict against the targets: at most 2 ms added at p50 at c=1, at least 1,000
requests/s at c=64.

    .venv/bin/python bench/gateway_overhead.py            # 5 s per point, about 2 minutes
    .venv/bin/python bench/gateway_overhead.py --quick    # 2 s per point, no cached pass
    .venv/bin/python bench/gateway_overhead.py --profile  # also py-spy the server at c=64

Needs ``wrk``, ``nginx`` (Debian/Ubuntu: ``apt-get install -y wrk nginx-light``; only the binary
is used, never the system service) and ``taskset`` (util-linux). Shares its wrk, server and
machine-noise helpers with the other benchmarks (``bench/_*.py``); the py-spy profile is
``_gateway_profile.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    NOISE_WARN_PCT,
    REPO,
    RESULTS_DIR,
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
from _cpu import CpuMeter, Reading, children_cpu_seconds, wait_until_quiet
from _gateway_profile import profile_target, summarize_profile
from _mock_upstream import (
    MOCK_RESPONSE,
    MOCK_TEXT,
    MOCK_USAGE,
    MODEL,
    OPENAI_PATH,
    MockUpstream,
    nginx_binary,
    running_upstream,
)
from _server import (
    Server,
    find_trellis,
    http_request,
    running_server,
    server_env,
)
from _wrk import (
    FAILED_REQUESTS_WARNING,
    WrkResult,
    check_wrk_and_cpus,
    errors_text,
    post_script,
    print_measured,
    run_wrk,
    wrk_version,
)

REST_PATH = "/api/v1/ai/chat"
LOGS_PATH = "/api/v1/db/logs"
CONCURRENCIES = (1, 32, 64)
CACHED_CONCURRENCIES = (1, 64)
WARMUP_CONCURRENCY = 64
RATE_LIMITS = unlimited_rate_limits("default", "ai")
# The targets under test.
TARGET_ADDED_P50_MS = 2.0  # at c=1, over calling the upstream directly
TARGET_RPS = 1_000.0  # at c=64
LOG_VISIBLE_TIMEOUT_S = 5.0

MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
# Valid for both doors. No temperature: the model's default (0.7) is not cacheable anyway, and the
# cache is off in the main pass. The cached pass asks for temperature 0 (deterministic: cached).
REQUEST = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}
CACHED_REQUEST = {**REQUEST, "temperature": 0}


class Target:
    DIRECT = "nginx direct"
    OPENAI = f"trellis {OPENAI_PATH}"
    REST = f"trellis {REST_PATH}"
    REST_CACHED = f"trellis {REST_PATH} (cache hit)"


# --- results ---------------------------------------------------------------------------------


@dataclass
class Point:
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    # Trellis CPU time (all threads) divided by requests served: its cost per request, no queueing.
    trellis_cpu_us_per_req: float | None
    nginx_cpu_us_per_req: float | None
    # Requests nginx served during the point, per request wrk counted (1.0: every call went upstream).
    upstream_per_req: float | None
    # wrk + nginx CPU, in % of one core: they share the client CPU; near 100 % the client side limits.
    client_cpu_pct: float | None
    # CPU used on the machine by anything but Trellis, nginx and wrk, in % of one core: noise.
    other_cpu_pct: float | None
    raw: str = field(repr=False)


@dataclass
class LogCheck:
    """The episodic log of one server: rows in the database against requests wrk counted."""

    label: str
    rows: int
    gateway_requests: int
    # The server's "episodic_log_dropped" warnings (logged at most once every 10 s).
    drop_warnings: int
    # trellis_episodic_log_dropped_total by reason, from /metrics just before the stop (None: no such metric).
    dropped: dict[str, int] | None


# --- checks ------------------------------------------------------------------------------------


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise BenchError(f"{what} is not JSON: {body[:300]!r}") from None


def check_upstream(upstream: MockUpstream) -> None:
    status, headers, body = http_request(upstream.port, "POST", OPENAI_PATH, REQUEST)
    if status != 200 or not headers.get("content-type", "").startswith("application/json"):
        raise BenchError(f"nginx answered {status} ({headers.get('content-type')}): {body[:300]!r}")
    if _json(body, "the mock's answer") != MOCK_RESPONSE:
        raise BenchError(f"nginx answered something else than the mock completion: {body[:300]!r}")


def _log_count(server: Server, auth: dict[str, str]) -> int:
    status, _, body = http_request(server.port, "GET", f"{LOGS_PATH}?limit=200", headers=auth)
    if status != 200:
        raise BenchError(f"GET {LOGS_PATH} answered {status}: {body[:300]!r}")
    return len(_json(body, LOGS_PATH)["data"]["items"])


def check_gateway(server: Server, auth: dict[str, str], *, cached: bool) -> int:
    """Both doors answer 200 with the mock's text, through the limiter, and the log grows.

    Returns how many gateway calls it made (each one is an episodic log row).
    """
    before = _log_count(server, auth)
    calls = 0
    if not cached:
        status, headers, body = http_request(server.port, "POST", OPENAI_PATH, REQUEST, auth)
        calls += 1
        data = _json(body, f"POST {OPENAI_PATH}")
        if status != 200:
            raise BenchError(f"POST {OPENAI_PATH} answered {status}: {body[:300]!r}\n{server.log_tail()}")
        text = data["choices"][0]["message"]["content"]
        if text != MOCK_TEXT or data.get("usage") != MOCK_USAGE:
            raise BenchError(f"POST {OPENAI_PATH} did not carry the mock's completion: {body[:300]!r}")
        if "ratelimit" not in headers:
            raise BenchError(f"POST {OPENAI_PATH} has no RateLimit header: is rate limiting on? {headers}")
    body_in = CACHED_REQUEST if cached else REQUEST
    for attempt in (1, 2):
        status, headers, body = http_request(server.port, "POST", REST_PATH, body_in, auth)
        calls += 1
        if status != 200:
            raise BenchError(f"POST {REST_PATH} answered {status}: {body[:300]!r}\n{server.log_tail()}")
        data = _json(body, f"POST {REST_PATH}")["data"]
        if data["response"] != MOCK_TEXT or "ratelimit" not in headers:
            raise BenchError(f"POST {REST_PATH} did not carry the mock's text through the limiter: {body[:300]!r}")
        # Uncached: never a hit. Cached pass: the second identical call must be a hit.
        expected = cached and attempt == 2
        if data["cached"] != expected:
            raise BenchError(
                f"POST {REST_PATH} answered cached={data['cached']}, expected {expected}: is the cache on?"
            )
    deadline = time.monotonic() + LOG_VISIBLE_TIMEOUT_S
    while (after := _log_count(server, auth)) < before + calls:
        if time.monotonic() > deadline:
            raise BenchError(f"episodic log: {after - before} new rows after {calls} calls (expected {calls})")
        time.sleep(0.1)
    print(f"   checked: 200 with the mock's text, RateLimit headers, log rows {before} -> {after}", flush=True)
    return calls


def log_drops(server: Server) -> dict[str, int] | None:
    """The server's own count of episodic log rows it dropped, by reason (Prometheus /metrics)."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        status, _, body = http_request(server.port, "GET", "/metrics")
        if status == 200:
            found = re.findall(rb'^trellis_episodic_log_dropped_total\{reason="([^"]+)"\}\s+([\d.e+]+)', body, re.M)
            if found or b"trellis_episodic_log_dropped" in body:
                return {reason.decode(): int(float(value)) for reason, value in found}
    return None


def count_log_rows(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'trellis.db'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM episodic_logs").fetchone()[0])


# --- one pass ----------------------------------------------------------------------------------


def measure(
    target: str,
    url: str,
    script: Path,
    headers: Sequence[str],
    concurrencies: Sequence[int],
    server: Server | None,
    upstream: MockUpstream,
    args: argparse.Namespace,
) -> tuple[list[Point], int]:
    """Warm-up, then one point per concurrency. Returns the points and every request wrk counted."""
    points: list[Point] = []
    counted = 0
    if args.warmup > 0:
        print(f"   warm-up  {target} c={WARMUP_CONCURRENCY} {args.warmup}s", flush=True)
        warm = run_wrk(
            url,
            script=script,
            concurrency=WARMUP_CONCURRENCY,
            duration_s=args.warmup,
            headers=headers,
            cpu=args.client_cpu,
        )
        counted += warm.requests
    for concurrency in concurrencies:
        if server is not None:
            # Requests still queued in the server when wrk stopped must not land in this point.
            server.wait_until_idle()
        if args.quiet_wait > 0:
            wait_until_quiet(args.quiet_wait)
        # wrk and nginx share the client CPU; wrk has been waited for when the meter stops, so it is counted.
        sources: dict[str, Callable[[], Reading]] = {"nginx": upstream.cpu_seconds, "wrk": children_cpu_seconds}
        if server is not None:
            sources["trellis"] = server.cpu_seconds
        served = upstream.requests_served()
        with CpuMeter(**sources) as meter:
            result = run_wrk(
                url,
                script=script,
                concurrency=concurrency,
                duration_s=args.duration,
                headers=headers,
                cpu=args.client_cpu,
            )
        served_after = upstream.requests_served()
        counted += result.requests

        def per_req(seconds: float | None, result: WrkResult = result) -> float | None:
            return seconds * 1e6 / result.requests if seconds is not None and result.requests else None

        nginx_s, wrk_s = meter.seconds["nginx"], meter.seconds["wrk"] or 0.0
        # The second stub_status query counts the first one too.
        upstream_requests = served_after - served - 1 if served is not None and served_after is not None else None

        point = Point(
            target=target,
            concurrency=concurrency,
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            requests=result.requests,
            non_2xx_3xx=result.non_2xx_3xx,
            socket_errors=result.socket_errors,
            trellis_cpu_us_per_req=per_req(meter.seconds.get("trellis")),
            nginx_cpu_us_per_req=per_req(nginx_s),
            upstream_per_req=upstream_requests / result.requests
            if upstream_requests is not None and result.requests
            else None,
            client_cpu_pct=(nginx_s + wrk_s) / meter.wall * 100 if nginx_s is not None and meter.wall else None,
            other_cpu_pct=meter.other_pct,
            raw=result.raw,
        )
        points.append(point)
        print_measured(target, concurrency, result, errors_text(point))
    return points, counted


def gateway_pass(
    upstream: MockUpstream, trellis: Path, workdir: Path, args: argparse.Namespace, *, cached: bool
) -> tuple[list[Point], LogCheck, dict[str, str]]:
    admin_key = new_admin_key()
    auth = {"Authorization": f"Bearer {admin_key}"}
    headers = [f"{k}: {v}" for k, v in auth.items()]
    data_dir = workdir / ("data-cached" if cached else "data")
    server_dir = workdir / ("server-cached" if cached else "server")
    server_dir.mkdir()
    env = server_env(
        data_dir,
        admin_key,
        rate_limit_enabled=True,
        rate_limits=RATE_LIMITS,
        models={
            MODEL: {
                "provider": "openai",
                "model_id": MODEL,
                "base_url": upstream.base_url,
                "api_key": "not-checked-by-the-mock",
                "capabilities": ["chat"],
            }
        },
        gateway__cache_enabled=cached,
    )
    label = "cache on, identical temperature-0 requests" if cached else "cache off"
    print(f"\n== trellis ({label}) on CPU {args.server_cpu}, nginx + wrk on CPU {args.client_cpu}", flush=True)
    points: list[Point] = []
    profiles: dict[str, str] = {}
    counted = 0
    if cached:
        targets = [(Target.REST_CACHED, REST_PATH, post_script(workdir / "cached.lua", CACHED_REQUEST))]
        concurrencies: Sequence[int] = CACHED_CONCURRENCIES
    else:
        script = post_script(workdir / "request.lua", REQUEST)
        targets = [(Target.OPENAI, OPENAI_PATH, script), (Target.REST, REST_PATH, script)]
        concurrencies = CONCURRENCIES
    with running_server(trellis, env, server_dir, args.server_cpu) as server:
        counted += check_gateway(server, auth, cached=cached)
        for target, path, script in targets:
            url = f"http://{HOST}:{server.port}{path}"
            measured, requests = measure(target, url, script, headers, concurrencies, server, upstream, args)
            points += measured
            counted += requests
            if args.profile and not cached:
                stamp = args.started.strftime("%Y%m%dT%H%M%SZ")
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                name = "openai" if path == OPENAI_PATH else "rest"
                output = RESULTS_DIR / f"gateway_overhead-{stamp}-{name}-c64.pyspy.txt"
                print(f"   profiling {target} c=64 {args.duration}s with py-spy (not a measured point)", flush=True)
                profile_target(server, url, script, headers, args, output)
                profiles[target] = str(output)
        dropped = log_drops(server)
        log_text_path = server.log_path
    # Stopped: the log writer flushed everything on shutdown.
    rows = count_log_rows(data_dir)
    server_log = log_text_path.read_text(errors="replace")
    check = LogCheck(
        label=label,
        rows=rows,
        gateway_requests=counted,
        drop_warnings=server_log.count("episodic_log_dropped"),
        dropped=dropped,
    )
    return points, check, profiles


def direct_pass(upstream: MockUpstream, workdir: Path, args: argparse.Namespace) -> list[Point]:
    print(f"\n== nginx directly on CPU {args.client_cpu} (with wrk)", flush=True)
    script = post_script(workdir / "direct.lua", REQUEST)
    url = f"{upstream.base_url.removesuffix('/v1')}{OPENAI_PATH}"
    points, _ = measure(Target.DIRECT, url, script, [], CONCURRENCIES, None, upstream, args)
    return points


# --- report ------------------------------------------------------------------------------------


def _baseline(points: Sequence[Point], point: Point) -> Point | None:
    if point.target == Target.DIRECT:
        return None
    return next((p for p in points if p.target == Target.DIRECT and p.concurrency == point.concurrency), None)


def render_points(points: Sequence[Point]) -> str:
    header = (
        "target",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p50 added ms",
        "vs direct req/s",
        "trellis CPU us/req",
        "nginx CPU us/req",
        "upstream/req",
        "wrk+nginx CPU %",
        "other CPU %",
        "errors",
    )
    rows: list[tuple[str, ...]] = []
    for point in points:
        base = _baseline(points, point)
        rows.append(
            (
                point.target,
                str(point.concurrency),
                f"{point.rps:,.0f}",
                f"{point.p50_ms:.3f}",
                f"{point.p99_ms:.3f}",
                f"{point.p50_ms - base.p50_ms:+.3f}" if base else "",
                f"{point.rps / base.rps:.3f}x" if base else "",
                fmt(point.trellis_cpu_us_per_req, ",.0f"),
                fmt(point.nginx_cpu_us_per_req, ",.1f"),
                fmt(point.upstream_per_req, ".2f"),
                fmt(point.client_cpu_pct, ".0f"),
                fmt(point.other_cpu_pct, ".0f"),
                errors_text(point) or "0",
            )
        )
    return render_table(header, rows, left=1, left_tail=1)


def render_verdict(points: Sequence[Point]) -> str:
    lines = ["Targets (uncached path):"]
    for target in (Target.OPENAI, Target.REST):
        one = next((p for p in points if p.target == target and p.concurrency == 1), None)
        base = _baseline(points, one) if one else None
        if one and base:
            added = one.p50_ms - base.p50_ms
            verdict = "met" if added <= TARGET_ADDED_P50_MS else "MISSED"
            lines.append(
                f"  {target}: added p50 at c=1 {added:.3f} ms (target <= {TARGET_ADDED_P50_MS:g} ms) -> {verdict}"
                f"  [{one.p50_ms:.3f} ms vs {base.p50_ms:.3f} ms direct]"
            )
        top = next((p for p in points if p.target == target and p.concurrency == 64), None)
        if top:
            verdict = "met" if top.rps >= TARGET_RPS else "MISSED"
            cpu = (
                f"; {top.trellis_cpu_us_per_req:,.0f} us of server CPU per request"
                if top.trellis_cpu_us_per_req
                else ""
            )
            lines.append(
                f"  {target}: req/s at c=64 {top.rps:,.0f} (target >= {TARGET_RPS:,.0f}) -> {verdict}"
                f"  [p99 {top.p99_ms:.1f} ms{cpu}]"
            )
    lines.append(
        "  The direct rows share one CPU between wrk and nginx, so at c=32/64 they measure that CPU, not nginx's"
        " ceiling; the Trellis rows are bounded by Trellis's one CPU (see trellis CPU us/req)."
    )
    return "\n".join(lines)


def render_logs(checks: Sequence[LogCheck]) -> str:
    lines = ["Episodic log (rows in the database after a graceful stop, against requests wrk counted):"]
    for check in checks:
        dropped = sum(check.dropped.values()) if check.dropped else 0
        ok = check.rows >= check.gateway_requests and not check.drop_warnings and not dropped
        if check.dropped is None:
            counted = "no drop counter in /metrics"
        else:
            counted = ", ".join(f"{reason} {n:,}" for reason, n in check.dropped.items() if n) or "none"
        lines.append(
            f"  {check.label}: {check.rows:,} rows for {check.gateway_requests:,} requests"
            f" (+ checks, profiling and in-flight ones); dropped: {counted}; drop warnings in the server log:"
            f" {check.drop_warnings} -> {'every call logged' if ok else 'ROWS MISSING'}"
        )
    return "\n".join(lines)


def write_json(
    points: Sequence[Point], checks: Sequence[LogCheck], profiles: dict[str, str], args: argparse.Namespace
) -> Path:
    nginx_version = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=False).stderr.strip()
    document: dict[str, Any] = {
        **result_header("gateway_overhead", args.started),
        "wrk": wrk_version(),
        "nginx": nginx_version,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "quiet_wait_s": args.quiet_wait,
            "rate_limits": RATE_LIMITS,
            "request": REQUEST,
            "mock_response": MOCK_RESPONSE,
        },
        "targets": {"added_p50_ms_at_c1": TARGET_ADDED_P50_MS, "rps_at_c64": TARGET_RPS},
        "points": [asdict(p) for p in points],
        "episodic_log": [asdict(c) for c in checks],
        "profiles": profiles,
    }
    return write_results("gateway_overhead", args.started, document)


# --- main --------------------------------------------------------------------------------------


def check_tools(args: argparse.Namespace) -> None:
    """wrk, taskset and the two CPUs (as for ``auth_overhead.py``), then nginx and, for --profile, py-spy."""
    check_wrk_and_cpus(args)
    nginx_binary()
    if args.profile and not (shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()):
        raise BenchError("--profile needs py-spy: `.venv/bin/pip install py-spy`")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per measured point (default 5; 2 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="seconds of warm-up per target (default 2; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="short points and no cached pass")
    parser.add_argument(
        "--cached-pass",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure cache hits on a second server with the cache on (default: on, off with --quick)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="after each uncached target, py-spy the server under c=64 load"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each point, wait up to this many seconds for other processes to go below "
        f"{NOISE_WARN_PCT:g}%% of a core (0: do not wait)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU Trellis is pinned to (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU wrk and nginx are pinned to (default 1)")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/gateway_overhead-*.json")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2 if args.quick else 5
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.cached_pass is None:
        args.cached_pass = not args.quick
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 and --warmup at least 0 (whole seconds: wrk takes integers)")
    args.started = datetime.now(UTC)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    points: list[Point] = []
    checks: list[LogCheck] = []
    profiles: dict[str, str] = {}
    try:
        check_tools(args)
        trellis = find_trellis()
        with (
            tempfile.TemporaryDirectory(prefix="trellis-gateway-bench-") as tmp,
            running_upstream(Path(tmp), args.client_cpu) as upstream,
        ):
            check_upstream(upstream)
            points += direct_pass(upstream, Path(tmp), args)
            measured, check, profiled = gateway_pass(upstream, trellis, Path(tmp), args, cached=False)
            points += measured
            checks.append(check)
            profiles.update(profiled)
            if args.cached_pass:
                measured, check, _ = gateway_pass(upstream, trellis, Path(tmp), args, cached=True)
                points += measured
                checks.append(check)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130

    print(
        f"\nTrellis gateway overhead: wrk -t1 and nginx (mock upstream) on CPU {args.client_cpu}, one `trellis serve`"
        f" on CPU {args.server_cpu}, {args.duration}s per point after {args.warmup}s warm-up per target\n"
    )
    print(render_points(points))
    print()
    print(render_verdict(points))
    print()
    print(render_logs(checks))
    for target, path in profiles.items():
        print(f"\nProfile of {target} at c=64 (py-spy, {path}):")
        print(summarize_profile(Path(path)))
    failed = [p for p in points if p.non_2xx_3xx or p.socket_errors]
    if failed:
        print(FAILED_REQUESTS_WARNING)
    missing = [
        c for c in checks if c.rows < c.gateway_requests or c.drop_warnings or (c.dropped and any(c.dropped.values()))
    ]
    if missing:
        print("\nWARNING: the episodic log lost rows (see above).")
    noisy = [p for p in points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT]
    if noisy:
        print(noise_warning(len(noisy)))
    if not args.no_json:
        print(f"\nJSON: {write_json(points, checks, profiles, args).relative_to(REPO)}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
