"""``gateway_overhead.py --profile``: py-spy on the server under load, and a summary of where its
event loop's thread spends its samples."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from _common import BenchError
from _server import Server
from _wrk import run_wrk


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
    # The CLI's frames under every sample (trellis/cli.py before the CLI became a package).
    skip = {f"{f} (trellis/{cli})" for f in ("main", "serve") for cli in ("cli/main.py", "cli.py")}
    skip.add("<module> (trellis)")
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
