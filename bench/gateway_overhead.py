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
machine-noise helpers with ``auth_overhead.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from auth_overhead import (
    HOST,
    NOISE_WARN_PCT,
    STOP_TIMEOUT_S,
    BenchError,
    Server,
    WrkResult,
    _children_cpu_seconds,
    _cpu_model,
    _cpu_seconds,
    _die_with_parent,
    _find_trellis,
    _free_port,
    _git_revision,
    _machine_busy_seconds,
    _raise_on_signal,
    _wrk_version,
    check_wrk_and_cpus,
    parse_wrk,
    running_server,
    wait_until_quiet,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
MODEL = "mock"
OPENAI_PATH = "/v1/chat/completions"
REST_PATH = "/api/v1/ai/chat"
LOGS_PATH = "/api/v1/db/logs"
STATUS_PATH = "/nginx_status"
CONCURRENCIES = (1, 32, 64)
CACHED_CONCURRENCIES = (1, 64)
WARMUP_CONCURRENCY = 64
# Settings cap a bucket at 1,000,000 requests; refilled every second, it never denies here.
RATE_LIMITS = {
    "admin": {
        "default": {"capacity": 1_000_000, "period_seconds": 1},
        "ai": {"capacity": 1_000_000, "period_seconds": 1},
    }
}
# The targets under test.
TARGET_ADDED_P50_MS = 2.0  # at c=1, over calling the upstream directly
TARGET_RPS = 1_000.0  # at c=64
NGINX_READY_TIMEOUT_S = 10.0
LOG_VISIBLE_TIMEOUT_S = 5.0

MOCK_TEXT = "Hello from the mock upstream."
MOCK_USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
MOCK_RESPONSE = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": MOCK_TEXT}, "finish_reason": "stop"}],
    "usage": MOCK_USAGE,
}
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

    @property
    def errors_text(self) -> str:
        parts = [f"{self.non_2xx_3xx} non-2xx"] if self.non_2xx_3xx else []
        parts += [f"{n} {kind}" for kind, n in self.socket_errors.items()]
        return ", ".join(parts)


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


# --- HTTP ------------------------------------------------------------------------------------


def _http(
    port: int, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {**({"Content-Type": "application/json"} if payload is not None else {}), **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise BenchError(f"{what} is not JSON: {body[:300]!r}") from None


# --- the mock upstream -----------------------------------------------------------------------


def nginx_config(prefix: Path, port: int) -> str:
    body = json.dumps(MOCK_RESPONSE, separators=(",", ":"))
    if any(c in body for c in "'\\$"):
        raise BenchError("the mock response must be a plain nginx string literal (no ' \\ or $)")
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# Written by bench/gateway_overhead.py: a mock OpenAI-compatible chat completions endpoint.
# One process (no master/worker split) so that it is one pid to pin, meter and stop.
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    server_tokens off;
{temp}
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    server {{
        listen {HOST}:{port} backlog=4096;
        location = {OPENAI_PATH} {{
            default_type application/json;
            return 200 '{body}';
        }}
        location = {STATUS_PATH} {{
            stub_status;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


class MockUpstream:
    """nginx in the foreground, pinned to a CPU, with its own prefix, pid and log paths."""

    def __init__(self, workdir: Path, cpu: int) -> None:
        self.port = _free_port()
        self.prefix = workdir / "nginx"
        self.prefix.mkdir()
        self.config_path = self.prefix / "nginx.conf"
        self.config_path.write_text(nginx_config(self.prefix, self.port))
        self.log_path = self.prefix / "error.log"
        self._command = ["taskset", "-c", str(cpu), _nginx_binary(), "-p", f"{self.prefix}/", "-e", str(self.log_path)]
        self._command += ["-c", str(self.config_path), "-g", "daemon off;"]
        self._out: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> None:
        self._out = (self.prefix / "stdout.log").open("wb")
        self.process = subprocess.Popen(
            self._command,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + NGINX_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"nginx exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if _http(self.port, "GET", STATUS_PATH)[0] == 200:
                    return
            time.sleep(0.05)
        raise BenchError(f"nginx was not ready within {NGINX_READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        return None if self.process is None else _cpu_seconds(self.process.pid)

    def requests_served(self) -> int | None:
        """nginx's request counter (stub_status), not counting this query itself."""
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, body = _http(self.port, "GET", STATUS_PATH)
            match = re.search(rb"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", body, re.MULTILINE)
            if status == 200 and match:
                return int(match.group(3)) - 1
        return None

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.log_path, self.prefix / "stdout.log"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(no nginx output)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(STOP_TIMEOUT_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._out is not None:
            self._out.close()
            self._out = None


@contextlib.contextmanager
def running_upstream(workdir: Path, cpu: int) -> Iterator[MockUpstream]:
    upstream = MockUpstream(workdir, cpu)
    try:
        upstream.start()
        yield upstream
    finally:
        upstream.stop()


def _nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)
    if found is None:
        raise BenchError("nginx is not installed: `sudo apt-get install -y nginx-light` (only the binary is used)")
    return found


# --- wrk -------------------------------------------------------------------------------------


def lua_script(path: Path, body: dict[str, Any]) -> Path:
    encoded = json.dumps(body, separators=(",", ":"))
    if any(c in encoded for c in "'\\"):
        raise BenchError("the request body must be a plain Lua string literal (no ' or \\)")
    path.write_text(
        f"""-- Written by bench/gateway_overhead.py: one fixed POST, repeated.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{encoded}'
"""
    )
    return path


def run_wrk(
    url: str, *, script: Path, concurrency: int, duration_s: int, headers: Sequence[str], cpu: int
) -> WrkResult:
    command = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency"]
    command += ["--timeout", "10s", "-s", str(script)]
    for header in headers:
        command += ["-H", header]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


class Meter:
    """Around one wrk run: Trellis's and nginx's CPU time, nginx's request count, and the noise."""

    def __init__(self, server: Server | None, upstream: MockUpstream) -> None:
        self._server = server
        self._upstream = upstream
        self.trellis_s: float | None = None
        self.nginx_s: float | None = None
        self.upstream_requests: int | None = None
        self.client_pct: float | None = None
        self.other_pct: float | None = None
        self._before: dict[str, Any] = {}

    def _snapshot(self) -> dict[str, Any]:
        return {
            "trellis": None if self._server is None else self._server.cpu_seconds(),
            "nginx": self._upstream.cpu_seconds(),
            "upstream_requests": self._upstream.requests_served(),
            "machine": _machine_busy_seconds(),
            "wrk": _children_cpu_seconds(),  # wrk has been waited for at exit, so it is counted
            "wall": time.monotonic(),
        }

    def __enter__(self) -> Meter:
        self._before = self._snapshot()
        return self

    def __exit__(self, *_: object) -> None:
        after, before = self._snapshot(), self._before
        delta = {k: None if after[k] is None or before[k] is None else after[k] - before[k] for k in after}
        wall = delta["wall"]
        self.trellis_s = delta["trellis"]
        self.nginx_s = delta["nginx"]
        if delta["upstream_requests"] is not None:
            self.upstream_requests = delta["upstream_requests"] - 1  # the "after" query counted itself once more
        if self.nginx_s is not None and wall:
            self.client_pct = (self.nginx_s + delta["wrk"]) / wall * 100
        if delta["machine"] is not None and wall:
            mine = (self.trellis_s or 0.0) + (self.nginx_s or 0.0) + delta["wrk"]
            self.other_pct = max(0.0, (delta["machine"] - mine) / wall * 100)


# --- checks ------------------------------------------------------------------------------------


def check_upstream(upstream: MockUpstream) -> None:
    status, headers, body = _http(upstream.port, "POST", OPENAI_PATH, REQUEST)
    if status != 200 or not headers.get("content-type", "").startswith("application/json"):
        raise BenchError(f"nginx answered {status} ({headers.get('content-type')}): {body[:300]!r}")
    if _json(body, "the mock's answer") != MOCK_RESPONSE:
        raise BenchError(f"nginx answered something else than the mock completion: {body[:300]!r}")


def _log_count(server: Server, auth: dict[str, str]) -> int:
    status, _, body = _http(server.port, "GET", f"{LOGS_PATH}?limit=200", headers=auth)
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
        status, headers, body = _http(server.port, "POST", OPENAI_PATH, REQUEST, auth)
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
        status, headers, body = _http(server.port, "POST", REST_PATH, body_in, auth)
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
        status, _, body = _http(server.port, "GET", "/metrics")
        if status == 200:
            found = re.findall(rb'^trellis_episodic_log_dropped_total\{reason="([^"]+)"\}\s+([\d.e+]+)', body, re.M)
            if found or b"trellis_episodic_log_dropped" in body:
                return {reason.decode(): int(float(value)) for reason, value in found}
    return None


def count_log_rows(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'trellis.db'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM episodic_logs").fetchone()[0])


# --- profiling ---------------------------------------------------------------------------------


def profile_target(
    server: Server,
    url: str,
    script: Path,
    headers: Sequence[str],
    args: argparse.Namespace,
    output: Path,
) -> Path:
    """py-spy on the server while wrk loads it at c=64 (an extra run: never a measured point)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    assert server.process is not None
    command = ["taskset", "-c", str(args.client_cpu), py_spy, "record", "--pid", str(server.process.pid)]
    # Blocking sampling (the default) for consistent stacks: it slows the server, which is why this
    # is an extra run and never a measured point.
    command += ["--rate", "250", "--duration", str(args.duration), "--threads", "--format", "raw"]
    command += ["--output", str(output)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # attached before the load starts
    run_wrk(url, script=script, concurrency=64, duration_s=args.duration, headers=headers, cpu=args.client_cpu)
    _, err = spy.communicate(timeout=args.duration + 60)
    if spy.returncode != 0 or not output.exists():
        raise BenchError(f"py-spy failed ({spy.returncode}): {err[-500:]}")
    return output


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


# Calls worth naming in a profile of this path: (label, a substring of the py-spy frame). Client
# library lines (httpx/httpcore, aiohttp) are shown only when the server uses that library.
HOT_CALLS = (
    ("upstream call (OpenAICompatibleProvider._post, all of it)", "OpenAICompatibleProvider._post ("),
    ("  httpx AsyncClient.send", "AsyncClient.send (httpx/_client.py"),
    ("  httpcore pool bookkeeping (_assign_requests_to_connections)", "_assign_requests_to_connections ("),
    ("  httpcore idle-socket checks (is_socket_readable)", "is_socket_readable ("),
    ("  aiohttp ClientSession._request", "ClientSession._request (aiohttp/client.py"),
    ("  aiohttp JSON body (JsonPayload)", "JsonPayload.__init__ (aiohttp/payload.py"),
    ("FastAPI dependencies (auth guard, rate limit, runtime)", "solve_dependencies ("),
    ("  trellis auth guard", "guard.<locals>.dependency (trellis/"),
    ("  request body parsing + validation", "request_body_to_args ("),
    ("response serialization (FastAPI)", "serialize_response ("),
    ("Prometheus label lookups (prometheus_client labels())", "MetricWrapperBase.labels (prometheus_client/"),
    ("retry loop (tenacity)", "tenacity/"),
    ("episodic log: submit on the request path", "EpisodicLogWriter.submit ("),
    ("episodic log: background batch writes", "EpisodicLogWriter._write ("),
    ("access middleware (trellis RequestEdgeMiddleware, all of it)", "RequestEdgeMiddleware.__call__ ("),
)
_OPTIONAL = ("httpx", "httpcore", "aiohttp")


def _package(file: str) -> str:
    """Who owns the code in a py-spy frame's file (py-spy gives paths relative to sys.path)."""
    if file == "<string>":
        return "generated code"
    if file.startswith("<"):
        return "python (frozen)"
    return file.split("/", 1)[0].removesuffix(".py")


def summarize_profile(path: Path, top: int = 12) -> str:
    """Where the event loop's thread spends its samples: by package, by function, in named calls."""
    by_package: Counter[str] = Counter()
    own: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    trellis: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        # Only the event loop's thread: aiosqlite's worker threads wait in queue.get(), which
        # py-spy does not recognise as idle.
        if not stack or not count_text.isdigit() or "MainThread" not in stack.split(";", 1)[0]:
            continue
        count = int(count_text)
        parsed = [m for m in map(_FRAME.match, stack.split(";")[1:]) if m is not None]
        if not parsed:
            continue
        total += count
        leaf = parsed[-1]
        by_package[_package(leaf.group("file"))] += count
        own[f"{leaf.group('func')} ({leaf.group('file')})"] += count
        for label, needle in HOT_CALLS:
            if needle in stack:
                hot[label] += count
        for name in {
            f"{m.group('func')} ({m.group('file')})" for m in parsed if m.group("file").startswith("trellis/")
        }:
            trellis[name] += count
    if not total:
        return "   (no samples of the event loop's thread)"
    skip = {"main (trellis/cli.py)", "serve (trellis/cli.py)", "<module> (trellis)"}
    return "\n".join(
        [
            f"   {total} samples of the event loop's thread while it ran; shares are of those. py-spy's"
            " blocking sampling can pin a sample on whatever runs when the GIL changes hands:"
            " check a surprising self time with a micro-benchmark before acting on it",
            "   by package (self time): "
            + ", ".join(f"{name} {count / total:.0%}" for name, count in by_package.most_common(top)),
            "   named calls (inclusive: the call and everything under it):",
            *(
                f"     {hot[label] / total:6.1%}  {label}"
                for label, _ in HOT_CALLS
                if hot[label] or not any(name in label for name in _OPTIONAL)
            ),
            "   functions by self time:",
            *(f"     {count / total:6.1%}  {name}" for name, count in own.most_common(top)),
            "   Trellis functions, inclusive:",
            *(f"     {count / total:6.1%}  {name}" for name, count in trellis.most_common(top + 3) if name not in skip),
        ]
    )


# --- one pass ----------------------------------------------------------------------------------


def server_env(data_dir: Path, upstream: MockUpstream, admin_key: str, *, cache: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    models = {
        MODEL: {
            "provider": "openai",
            "model_id": MODEL,
            "base_url": upstream.base_url,
            "api_key": "not-checked-by-the-mock",
            "capabilities": ["chat"],
        }
    }
    env.update(
        TRELLIS_DATA_DIR=str(data_dir),
        TRELLIS_BOOTSTRAP_ADMIN_KEY=admin_key,
        TRELLIS_JWT_SECRET=secrets.token_hex(20),  # 40 characters
        TRELLIS_LOG_LEVEL="WARNING",
        TRELLIS_RATE_LIMIT_ENABLED="true",
        TRELLIS_RATE_LIMITS=json.dumps(RATE_LIMITS),
        TRELLIS_MODELS=json.dumps(models),
        TRELLIS_GATEWAY__CACHE_ENABLED="true" if cache else "false",
        TRELLIS_CONFIG=str(data_dir / "no-such-trellis.toml"),
        PYTHONUNBUFFERED="1",
    )
    return env


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
        # Requests still queued in the server when wrk stopped must not land in this point.
        wait_until_idle(server)
        if args.quiet_wait > 0:
            wait_until_quiet(args.quiet_wait)
        with Meter(server, upstream) as meter:
            result = run_wrk(
                url,
                script=script,
                concurrency=concurrency,
                duration_s=args.duration,
                headers=headers,
                cpu=args.client_cpu,
            )
        counted += result.requests

        def per_req(seconds: float | None, result: WrkResult = result) -> float | None:
            return seconds * 1e6 / result.requests if seconds is not None and result.requests else None

        point = Point(
            target=target,
            concurrency=concurrency,
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            requests=result.requests,
            non_2xx_3xx=result.non_2xx_3xx,
            socket_errors=result.socket_errors,
            trellis_cpu_us_per_req=per_req(meter.trellis_s) if server is not None else None,
            nginx_cpu_us_per_req=per_req(meter.nginx_s),
            upstream_per_req=meter.upstream_requests / result.requests
            if meter.upstream_requests is not None and result.requests
            else None,
            client_cpu_pct=meter.client_pct,
            other_cpu_pct=meter.other_pct,
            raw=result.raw,
        )
        points.append(point)
        errors = f"  ERRORS: {point.errors_text}" if point.errors_text else ""
        print(
            f"   measured {target} c={concurrency}: {result.rps:,.0f} req/s, "
            f"p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms{errors}",
            flush=True,
        )
    return points, counted


def wait_until_idle(server: Server | None, timeout_s: float = 30.0) -> None:
    """Until the server uses at most one clock tick of CPU in 200 ms: its backlog is drained."""
    if server is None:
        return
    tick = 1 / os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout_s
    before = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        after = server.cpu_seconds()
        if before is None or after is None or after - before <= tick + 1e-9:
            return
        before = after
    print(f"   the server was still busy {timeout_s:g}s after the load stopped; measuring anyway", flush=True)


def gateway_pass(
    upstream: MockUpstream, trellis: Path, workdir: Path, args: argparse.Namespace, *, cached: bool
) -> tuple[list[Point], LogCheck, dict[str, str]]:
    admin_key = "trl_" + secrets.token_urlsafe(32)  # 47 characters
    auth = {"Authorization": f"Bearer {admin_key}"}
    headers = [f"{k}: {v}" for k, v in auth.items()]
    data_dir = workdir / ("data-cached" if cached else "data")
    server_dir = workdir / ("server-cached" if cached else "server")
    server_dir.mkdir()
    env = server_env(data_dir, upstream, admin_key, cache=cached)
    label = "cache on, identical temperature-0 requests" if cached else "cache off"
    print(f"\n== trellis ({label}) on CPU {args.server_cpu}, nginx + wrk on CPU {args.client_cpu}", flush=True)
    points: list[Point] = []
    profiles: dict[str, str] = {}
    counted = 0
    if cached:
        targets = [(Target.REST_CACHED, REST_PATH, lua_script(workdir / "cached.lua", CACHED_REQUEST))]
        concurrencies: Sequence[int] = CACHED_CONCURRENCIES
    else:
        script = lua_script(workdir / "request.lua", REQUEST)
        targets = [(Target.OPENAI, OPENAI_PATH, script), (Target.REST, REST_PATH, script)]
        concurrencies = CONCURRENCIES
    with running_server(trellis, env, args.server_cpu, server_dir) as server:
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
    script = lua_script(workdir / "direct.lua", REQUEST)
    url = f"{upstream.base_url.removesuffix('/v1')}{OPENAI_PATH}"
    points, _ = measure(Target.DIRECT, url, script, [], CONCURRENCIES, None, upstream, args)
    return points


# --- report ------------------------------------------------------------------------------------


def _baseline(points: Sequence[Point], point: Point) -> Point | None:
    if point.target == Target.DIRECT:
        return None
    return next((p for p in points if p.target == Target.DIRECT and p.concurrency == point.concurrency), None)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(points: Sequence[Point]) -> str:
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
                _fmt(point.trellis_cpu_us_per_req, ",.0f"),
                _fmt(point.nginx_cpu_us_per_req, ",.1f"),
                _fmt(point.upstream_per_req, ".2f"),
                _fmt(point.client_cpu_pct, ".0f"),
                _fmt(point.other_cpu_pct, ".0f"),
                point.errors_text or "0",
            )
        )
    right = set(range(1, len(header) - 1))
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


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
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"gateway_overhead-{args.started:%Y%m%dT%H%M%SZ}.json"
    nginx_version = subprocess.run([_nginx_binary(), "-v"], capture_output=True, text=True, check=False).stderr.strip()
    document: dict[str, Any] = {
        "benchmark": "gateway_overhead",
        "started_at": args.started.isoformat(),
        "git": _git_revision(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "wrk": _wrk_version(),
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
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --- main --------------------------------------------------------------------------------------


def check_tools(args: argparse.Namespace) -> None:
    """The auth benchmark's checks (wrk, taskset, the two CPUs), then nginx and, for --profile, py-spy."""
    check_wrk_and_cpus(args)
    _nginx_binary()
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
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    points: list[Point] = []
    checks: list[LogCheck] = []
    profiles: dict[str, str] = {}
    try:
        check_tools(args)
        trellis = _find_trellis()
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
    print(render_table(points))
    print()
    print(render_verdict(points))
    print()
    print(render_logs(checks))
    for target, path in profiles.items():
        print(f"\nProfile of {target} at c=64 (py-spy, {path}):")
        print(summarize_profile(Path(path)))
    failed = [p for p in points if p.non_2xx_3xx or p.socket_errors]
    if failed:
        print("\nWARNING: some points had failed requests (see the errors column); their numbers are not valid.")
    missing = [
        c for c in checks if c.rows < c.gateway_requests or c.drop_warnings or (c.dropped and any(c.dropped.values()))
    ]
    if missing:
        print("\nWARNING: the episodic log lost rows (see above).")
    noisy = [p for p in points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT]
    if noisy:
        print(
            f"\nWARNING: other processes used more than {NOISE_WARN_PCT:g}% of a core during {len(noisy)} point(s)"
            " (other CPU % column): those numbers include contention; rerun on a quiet machine."
        )
    if not args.no_json:
        print(f"\nJSON: {write_json(points, checks, profiles, args).relative_to(REPO)}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
