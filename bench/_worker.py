"""A ``trellis worker`` child: the process that runs workflow steps in a distributed setup, next to
the API's ``trellis serve`` (``_server.py``), with the same environment (database URL, JWT secret,
workflow secret keys, queue). Started in its own process group, dies with the benchmark, ready once
it printed its worker id; stopped with SIGTERM (it hands its runs back) or killed with SIGKILL (as
when a machine dies: its runs come back when their leases expire)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from _common import BenchError
from _cpu import process_cpu_seconds
from _server import READY_TIMEOUT_S, die_with_parent, stop_process_group

# `trellis worker` prints this line once it takes work: "Trellis worker <host>:<pid>:<random>".
_READY = re.compile(r"Trellis worker (\S+:(\d+):[0-9a-f]+(?::live)?)")


class Worker:
    """One ``trellis worker`` (``concurrency`` runs at once, else the settings' default)."""

    def __init__(
        self, trellis: Path, env: dict[str, str], workdir: Path, name: str, concurrency: int | None = None
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.worker_id = ""
        options = [] if concurrency is None else ["--concurrency", str(concurrency)]
        self._command = [str(trellis), "worker", *options]
        self._env = env
        self._workdir = workdir
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self._command,
            env=self._env,
            cwd=self._workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} (trellis worker) exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                found = _READY.search(self.log_path.read_text(errors="replace"))
                if found and int(found.group(2)) == self.process.pid:
                    self.worker_id = found.group(1)
                    return
            time.sleep(0.05)
        raise BenchError(
            f"{self.name} (trellis worker) was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
        )

    def cpu_seconds(self) -> float | None:
        return None if self.process is None else process_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no worker log)"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs; its leases stay until they expire."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        self._close_log()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
