"""Load with ``wrk``: running it pinned to a CPU, reading its output, and the checks it needs."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from _common import BenchError


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


class HasErrors(Protocol):
    non_2xx_3xx: int
    socket_errors: dict[str, int]


def errors_text(point: HasErrors) -> str:
    """wrk's non-2xx/3xx responses and socket errors of a point, in words ("" when there were none)."""
    parts = [f"{point.non_2xx_3xx} non-2xx"] if point.non_2xx_3xx else []
    parts += [f"{n} {kind}" for kind, n in point.socket_errors.items()]
    return ", ".join(parts)


FAILED_REQUESTS_WARNING = (
    "\nWARNING: some points had failed requests (see the errors column); their numbers are not valid."
)


def print_measured(what: str, concurrency: int, result: WrkResult, errors: str) -> None:
    print(
        f"   measured {what} c={concurrency}: {result.rps:,.0f} req/s, "
        f"p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms{f'  ERRORS: {errors}' if errors else ''}",
        flush=True,
    )


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


def run_wrk(
    url: str,
    *,
    concurrency: int,
    duration_s: int,
    headers: Sequence[str],
    cpu: int,
    script: Path | None = None,
) -> WrkResult:
    """``wrk -t1`` pinned to ``cpu``, with ``--latency``; ``script`` is a Lua script (``post_script``)."""
    command = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency"]
    command += ["--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    for header in headers:
        command += ["-H", header]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


def post_script(path: Path, body: dict[str, Any]) -> Path:
    """A wrk Lua script at ``path`` that sends one fixed JSON ``POST``, repeated."""
    encoded = json.dumps(body, separators=(",", ":"))
    if any(c in encoded for c in "'\\"):
        raise BenchError("the request body must be a plain Lua string literal (no ' or \\)")
    path.write_text(
        f"""-- Written by bench/_wrk.py: one fixed POST, repeated.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{encoded}'
"""
    )
    return path


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "unknown"


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
