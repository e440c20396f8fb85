"""Child processes: one ``trellis serve`` (pinned to CPUs, or not), its environment, HTTP to it, and
the plumbing every child process of a benchmark shares (dies with the benchmark, stopped in order)."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from _common import HOST, BenchError
from _cpu import process_cpu_seconds

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process_group(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the child's process group, then SIGKILL if it is still there after ``timeout_s``."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


def http_request(
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lower-case names) and body. A ``body`` is
    sent as JSON."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {**({"Content-Type": "application/json"} if payload is not None else {}), **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def find_trellis() -> Path:
    """The ``trellis`` command of the Python running the benchmark."""
    beside = Path(sys.executable).parent / "trellis"
    if beside.exists():
        return beside
    found = shutil.which("trellis")
    if found is None:
        raise BenchError("cannot find the `trellis` command: run this with the project's .venv/bin/python")
    return Path(found)


def _setting(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def server_env(
    data_dir: Path, admin_key: str, *, log_level: str = "WARNING", jwt_secret: str | None = None, **settings: Any
) -> dict[str, str]:
    """The environment of a benchmark's ``trellis serve``: none of the caller's ``TRELLIS_*`` variables
    nor its ``trellis.toml``; ``data_dir``, a bootstrap admin key, a JWT secret (random unless given),
    ``log_level``, and each of ``settings`` as ``TRELLIS_<NAME>`` (``gateway__cache_enabled=False``
    is ``TRELLIS_GATEWAY__CACHE_ENABLED=false``; dicts and lists as JSON)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    if env.get("PYTHONPATH"):
        # Absolute: a server runs in its own working directory, where `PYTHONPATH=src` would name
        # nothing and the virtualenv's editable install (another checkout's code) would run instead.
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    env.update(
        TRELLIS_DATA_DIR=str(data_dir),
        TRELLIS_BOOTSTRAP_ADMIN_KEY=admin_key,
        TRELLIS_JWT_SECRET=jwt_secret or secrets.token_hex(20),  # 40 characters
        TRELLIS_LOG_LEVEL=log_level,
    )
    env.update({f"TRELLIS_{name.upper()}": _setting(value) for name, value in settings.items()})
    env.update(TRELLIS_CONFIG=str(data_dir / "no-such-trellis.toml"), PYTHONUNBUFFERED="1")
    return env


class Server:
    """One ``trellis serve`` in its own process group, with its own working directory; pinned with
    ``taskset`` to ``cpus`` (a CPU, or a taskset CPU list), or, with ``cpus=None``, on every CPU."""

    def __init__(self, trellis: Path, env: dict[str, str], workdir: Path, cpus: int | str | None = None) -> None:
        self.port = free_port()
        self.log_path = workdir / "server.log"
        pinning = [] if cpus is None else ["taskset", "-c", str(cpus)]
        self._command = [*pinning, str(trellis), "serve", "--host", HOST, "--port", str(self.port)]
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
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"trellis serve exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = http_request(self.port, "GET", "/ready", timeout=5)
                if status == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"trellis serve was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        return None if self.process is None else process_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def wait_until_idle(self, timeout_s: float = 30.0) -> None:
        """Until the server uses at most one clock tick of CPU in 200 ms: what an earlier load left
        queued is drained."""
        tick = 1 / os.sysconf("SC_CLK_TCK")
        deadline = time.monotonic() + timeout_s
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            after = self.cpu_seconds()
            if before is None or after is None or after - before <= tick + 1e-9:
                return
            before = after
        print(f"   the server was still busy {timeout_s:g}s after the load stopped; measuring anyway", flush=True)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def running_server(
    trellis: Path, env: dict[str, str], workdir: Path, cpus: int | str | None = None
) -> Iterator[Server]:
    server = Server(trellis, env, workdir, cpus)
    try:
        server.start()
        yield server
    finally:
        server.stop()
