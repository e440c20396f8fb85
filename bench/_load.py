"""Closed-loop HTTP load from the benchmark's own process: ``concurrency`` submitters, each on its own
keep-alive HTTP/1.1 connection (asyncio streams, no client library), sending one request after
another for a fixed time and checking every answer. For what ``wrk`` cannot do: judge each answer's
body (a run that ended ``failed`` is an error, not a request served), or a machine without wrk.

A submitter's request is built per request from its sequence number (``make``), so bodies can
differ; ``check`` gets (sequence number, status, body) and returns what was wrong, or None. Only
answers that passed the check count as done and give a latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from _common import HOST, percentile

Make = Callable[[int], bytes]
Check = Callable[[int, int, bytes], str | None]
# Errors kept per kind in a result: the first few kinds, with a count each.
MAX_ERROR_KINDS = 10


def http_request_bytes(
    method: str, path: str, port: int, headers: dict[str, str] | None = None, body: bytes | None = None
) -> bytes:
    """One HTTP/1.1 request (keep-alive), ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send ``raw``, read the answer: (status, body)."""
        await self.open()
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length: int | None = None
        chunked = close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self._reader.readexactly(length)
        else:  # no length: the body runs to the end of the connection
            body, close = await self._reader.read(), True
        if close:
            await self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)


@dataclass
class LoadResult:
    concurrency: int
    elapsed_s: float  # from the start until the last submitter's last answer
    done: int  # answers that passed the check
    failed: int
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # of the answers that passed

    @property
    def per_second(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    def errors_text(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.errors.most_common())


async def run_load(
    port: int,
    make: Make,
    check: Check,
    *,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 90.0,
) -> LoadResult:
    """``concurrency`` submitters loop ``make`` → send → ``check`` until ``duration_s`` has passed
    (requests under way then are finished and counted). Connections are opened before the clock
    starts."""
    connections = [Connection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    sequence = itertools.count()
    result = LoadResult(concurrency=concurrency, elapsed_s=0.0, done=0, failed=0)

    def error(kind: str) -> None:
        result.failed += 1
        if kind in result.errors or len(result.errors) < MAX_ERROR_KINDS:
            result.errors[kind] += 1

    async def submitter(connection: Connection, deadline: float) -> None:
        while time.perf_counter() < deadline:
            n = next(sequence)
            raw = make(n)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    status, body = await connection.request(raw)
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                error(type(exc).__name__)
                await connection.close()
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            problem = check(n, status, body)
            if problem is None:
                result.done += 1
                result.latencies_ms.append(latency_ms)
            else:
                error(problem)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(submitter(c, started + duration_s) for c in connections))
        result.elapsed_s = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return result
