"""The in-process work queue of the embedded deployment: API and workers in one process.

Plain asyncio rather than taskiq's ``InMemoryBroker``: that broker has no queue at all. Its ``kick``
starts the task at once (``asyncio.create_task`` of the receiver callback), so nothing is waiting to
be split between two consumers, there is no per-consumer concurrency limit to hold a nudge back, and
nothing can be stopped from taking new work on ``close``. Here, queues of the same name in one process
share one ``asyncio.Queue`` of run ids (kept while any of them exists), and each consumer takes an id
only when it has a free slot, so a nudge is never stranded in a consumer that cannot run it.

Nothing survives the process: a nudge queued when it exits is gone (the engine's database poll finds
the run). A handler call cancelled by ``close`` puts its run id back, for another consumer of the
same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from trellis.kit.logging import get_logger
from trellis.workflows.queue.base import (
    DEFAULT_GRACE_PERIOD,
    RunHandler,
    WorkQueueUnavailable,
    check_concurrency,
    check_name,
)

log = get_logger(__name__)


class _Channel:
    """The run ids of one queue name in this process."""

    def __init__(self) -> None:
        self.run_ids: asyncio.Queue[str] = asyncio.Queue()


# A channel lives as long as a queue of its name does.
_channels: weakref.WeakValueDictionary[str, _Channel] = weakref.WeakValueDictionary()


def _channel(name: str) -> _Channel:
    channel = _channels.get(name)
    if channel is None:
        channel = _channels[name] = _Channel()
    return channel


class MemoryWorkQueue:
    def __init__(self, name: str, *, grace_period: float = DEFAULT_GRACE_PERIOD) -> None:
        self.name = check_name(name)
        self.grace_period = grace_period
        self._channel = _channel(name)
        self._closed = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def pending(self) -> int:
        """Nudges queued under this name and not taken yet."""
        return self._channel.run_ids.qsize()

    async def open(self) -> None:
        if self._closed:
            raise WorkQueueUnavailable("The work queue is closed")

    async def submit(self, run_id: str) -> None:
        if self._closed:
            raise WorkQueueUnavailable("The work queue is closed")
        self._channel.run_ids.put_nowait(run_id)

    async def consume(self, handler: RunHandler, *, concurrency: int) -> None:
        check_concurrency(concurrency)
        if self._closed:
            raise WorkQueueUnavailable("The work queue is closed")
        if self._dispatcher is not None:
            raise RuntimeError("this work queue is already consuming")
        self._dispatcher = asyncio.create_task(
            self._dispatch(handler, asyncio.Semaphore(concurrency)), name=f"work-queue:{self.name}"
        )

    async def _dispatch(self, handler: RunHandler, slots: asyncio.Semaphore) -> None:
        # A slot first, then a run id: an id is only taken by a consumer that can start it now.
        while True:
            await slots.acquire()
            try:
                run_id = await self._channel.run_ids.get()
            except BaseException:
                slots.release()
                raise
            call = asyncio.create_task(self._call(handler, run_id, slots))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, handler: RunHandler, run_id: str, slots: asyncio.Semaphore) -> None:
        try:
            await handler(run_id)
        except asyncio.CancelledError:
            if self._stopping:
                # Cut short by close: hand the nudge to whoever consumes this name next.
                self._channel.run_ids.put_nowait(run_id)
            raise
        except Exception:
            log.exception("work_queue.handler_failed", queue=self.name, run_id=run_id)
        finally:
            slots.release()

    async def close(self) -> None:
        self._closed = True
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None:
            return
        dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatcher
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=self.grace_period)
        left = set(self._calls)
        if left:
            log.warning("work_queue.handlers_cancelled", queue=self.name, count=len(left))
            self._stopping = True
            for call in left:
                call.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    async def delete(self) -> None:
        """Drop the nudges still queued under this name (tests, operators)."""
        while not self._channel.run_ids.empty():
            self._channel.run_ids.get_nowait()
