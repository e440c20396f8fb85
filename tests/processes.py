"""Real Trellis processes for tests: `trellis serve` and `trellis worker` started as subprocesses on
free ports, waited for, stopped (or killed) and their output shown when a test fails."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TRELLIS = Path(sys.executable).with_name("trellis")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def output(self) -> str:
        text = self.log.read_text(errors="replace")
        return f"--- {self.name} (exit {self.process.poll()}) output ---\n{text[-20_000:]}"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine or a container dies."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def start(name: str, args: list[str], env: dict[str, str], workdir: Path) -> Process:
    log = workdir / f"{name}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(TRELLIS), *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Process(name, process, log)


def start_server(name: str, env: dict[str, str], workdir: Path) -> Process:
    port = free_port()
    server = start(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], env, workdir)
    server.url = f"http://127.0.0.1:{port}"
    return server


async def wait_ready(server: Process, deadline_seconds: float = 60.0) -> None:
    """Poll GET /ready until the server says ready; fail early if the process dies."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    async with httpx.AsyncClient(base_url=server.url, timeout=2.0) as client:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"{server.name} exited before becoming ready\n{server.output()}")
            try:
                response = await client.get("/ready")
                if response.status_code == 200 and response.json()["status"] == "ready":
                    return
            except httpx.TransportError:
                pass
            if loop.time() > deadline:
                pytest.fail(f"{server.name} not ready after {deadline_seconds} s\n{server.output()}")
            await asyncio.sleep(0.05)  # poll interval while the process starts up
