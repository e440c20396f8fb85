"""``gateway_overhead.py``'s upstream: a mock OpenAI-compatible chat completions server that is not
Python, so that it costs next to nothing. nginx, started from a config written in a temporary
directory (its own prefix, pid file, logs and temp paths, on a free port, in the foreground, one
process), answers ``POST /v1/chat/completions`` with one fixed completion; ``stub_status`` counts
the requests it served. The system's nginx service is never used or touched."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from _common import HOST, BenchError
from _cpu import process_cpu_seconds
from _server import die_with_parent, free_port, http_request, stop_process_group

MODEL = "mock"
OPENAI_PATH = "/v1/chat/completions"
STATUS_PATH = "/nginx_status"
NGINX_READY_TIMEOUT_S = 10.0
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


def nginx_config(prefix: Path, port: int) -> str:
    body = json.dumps(MOCK_RESPONSE, separators=(",", ":"))
    if any(c in body for c in "'\\$"):
        raise BenchError("the mock response must be a plain nginx string literal (no ' \\ or $)")
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# Written by bench/_mock_upstream.py: a mock OpenAI-compatible chat completions endpoint.
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
        self.port = free_port()
        self.prefix = workdir / "nginx"
        self.prefix.mkdir()
        self.config_path = self.prefix / "nginx.conf"
        self.config_path.write_text(nginx_config(self.prefix, self.port))
        self.log_path = self.prefix / "error.log"
        self._command = ["taskset", "-c", str(cpu), nginx_binary(), "-p", f"{self.prefix}/", "-e", str(self.log_path)]
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
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + NGINX_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"nginx exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request(self.port, "GET", STATUS_PATH)[0] == 200:
                    return
            time.sleep(0.05)
        raise BenchError(f"nginx was not ready within {NGINX_READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        return None if self.process is None else process_cpu_seconds(self.process.pid)

    def requests_served(self) -> int | None:
        """nginx's request counter (stub_status), not counting this query itself."""
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _, body = http_request(self.port, "GET", STATUS_PATH)
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
        if process is not None:
            stop_process_group(process)
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


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)
    if found is None:
        raise BenchError("nginx is not installed: `sudo apt-get install -y nginx-light` (only the binary is used)")
    return found
