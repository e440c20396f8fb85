"""TEMPORARY stand-in until the queue branch lands (deleted before merging it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

RunHandler = Callable[[str], Awaitable[None]]


class WorkQueue(Protocol):
    async def open(self) -> None: ...
    async def submit(self, run_id: str) -> None: ...
    async def consume(self, handler: RunHandler, *, concurrency: int) -> None: ...
    async def close(self) -> None: ...


def build_work_queue(url: str | None, *, name: str) -> WorkQueue:
    raise NotImplementedError(url)
