"""CPU accounting: what the measured processes used, and what everyone else used (noise).

Every benchmark measures on a machine others may share (a CI runner, tests running alongside), so
each measured stretch is wrapped in a :class:`CpuMeter` that reads ``/proc`` before and after: the
CPU time of the processes it is told about, and of the whole machine; what the machine used beyond
them is the noise (``other CPU %`` in the tables).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import NOISE_WARN_PCT

# What a source of CPU time reads: seconds, or seconds per process id (a tree of processes whose
# members come and go), or None when it cannot be read.
Reading = float | dict[int, float] | None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc (None when unavailable)."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def machine_busy_seconds() -> float | None:
    """CPU time spent on all CPUs, except idle and iowait, since boot."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's children that have been waited for (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_seconds() -> float:
    """CPU time of this process and of its children that have been waited for."""
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


def wait_until_quiet(max_wait_s: float, threshold_pct: float = NOISE_WARN_PCT) -> None:
    """Between points (servers idle): wait, at most ``max_wait_s``, until the machine is quiet."""
    deadline = time.monotonic() + max_wait_s
    told = False
    while True:
        before, started = machine_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        after = machine_busy_seconds()
        if before is None or after is None:
            return
        busy_pct = (after - before) / (time.monotonic() - started) * 100
        if busy_pct < threshold_pct:
            return
        if time.monotonic() >= deadline:
            print(f"   machine still busy ({busy_pct:.0f}% of a core); measuring anyway", flush=True)
            return
        if not told:
            print(
                f"   waiting up to {max_wait_s:g}s for other processes to calm down ({busy_pct:.0f}% of a core)",
                flush=True,
            )
            told = True


# --- trees of processes --------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    found: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = stat
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class ProcessTree:
    """Processes doing a benchmark's work: ``roots`` (by default this process) and all their
    descendants, plus the processes whose command line names ``database_name`` (the backends a
    PostgreSQL that is not ours runs for our database: their process title names it)."""

    roots: list[int] = field(default_factory=lambda: [os.getpid()])
    database_name: str | None = None

    def cpu(self) -> dict[int, float]:
        processes = _processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in processes.items():
            children.setdefault(parent, []).append(pid)
        mine: set[int] = set()
        stack = [pid for pid in self.roots if pid in processes]
        while stack:
            pid = stack.pop()
            if pid not in mine:
                mine.add(pid)
                stack.extend(children.get(pid, []))
        if self.database_name:
            mine.update(pid for pid in processes if f" {self.database_name} " in _cmdline(pid))
        return {pid: processes[pid][1] for pid in mine}


# --- the meter -------------------------------------------------------------------------------------


def _delta(before: Reading, after: Reading) -> float | None:
    if before is None or after is None:
        return None
    if isinstance(after, dict):
        assert isinstance(before, dict)
        # A process that appeared meanwhile counts from zero; one that ended is lost (rare).
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    assert not isinstance(before, dict)
    return after - before


class CpuMeter:
    """Around one measured stretch: the CPU seconds each named source used (``seconds[name]``, None
    when it could not be read), and ``other_pct``, the CPU the rest of the machine used, in % of one
    core (None unless the machine and every source could be read).

        with CpuMeter(server=server.cpu_seconds, wrk=children_cpu_seconds) as meter:
            ...
    """

    def __init__(self, **sources: Callable[[], Reading]) -> None:
        self._sources = sources
        self.seconds: dict[str, float | None] = {}
        self.wall: float = 0.0
        self.other_pct: float | None = None
        self._before: dict[str, Reading] = {}
        self._machine: float | None = None
        self._started = 0.0

    def __enter__(self) -> CpuMeter:
        self._before = {name: read() for name, read in self._sources.items()}
        self._machine, self._started = machine_busy_seconds(), time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        after = {name: read() for name, read in self._sources.items()}
        machine = machine_busy_seconds()
        self.wall = time.monotonic() - self._started
        self.seconds = {name: _delta(self._before[name], after[name]) for name in self._sources}
        known = [s for s in self.seconds.values() if s is not None]
        if self._machine is None or machine is None or len(known) < len(self.seconds) or self.wall <= 0:
            return
        self.other_pct = max(0.0, (machine - self._machine - sum(known)) / self.wall * 100)
