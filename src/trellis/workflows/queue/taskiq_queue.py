"""The distributed work queue: nudges through a taskiq broker (Redis Streams, NATS JetStream, RabbitMQ).

API replicas call ``open`` and ``submit``; ``trellis worker`` builds the same queue and calls
``consume``, which runs taskiq's own ``Receiver`` inside the current event loop, the way ``taskiq
worker`` does in each of its processes (``Receiver(...).listen(shutdown_event)``), without taskiq's
CLI, process manager or signal handlers: the worker command stays a plain Typer command that owns
its loop and calls ``close`` on a signal.

One task is registered, ``trellis.workflow.nudge(run_id)``; its body calls the handler. Producing and
consuming use two broker instances (one connection or pool each), so a process may do both and a
producer never subscribes. A producer keeps its connection: ``submit`` is one publish (Redis
``XADD``, JetStream publish with its ack, AMQP publish with its confirm), bounded by
``submit_timeout``.

taskiq behaviour this relies on or works around (taskiq 0.13.0):

- The Receiver admits ``max_async_tasks`` messages at a time plus ``max_prefetch`` (0 here), so a
  consumer holds at most ``concurrency`` nudges and the others stay in the broker for its peers.
- It acknowledges after a task that *raised* too (``WHEN_EXECUTED`` / ``WHEN_SAVED``), and its
  ``wait_tasks_timeout`` only stops waiting: task calls still running are neither cancelled nor
  awaited, and would outlive the broker connection. So acknowledgement is ``MANUAL``: the task body
  acknowledges after the handler returned or raised, and ``close`` cancels what is left after the grace
  period, unacknowledged, before the broker shuts down (which hands those nudges back).
- It logs every task at INFO (``taskiq.receiver.receiver``): one line per nudge. The level of that
  logger is raised to WARNING here when nobody has set it.
- ``kiq`` wraps any error of the broker's ``kick`` in ``SendTaskError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from taskiq import AsyncBroker, Context, TaskiqDepends
from taskiq.acks import AcknowledgeType
from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker
from taskiq.receiver import Receiver

from trellis.kit.logging import get_logger
from trellis.workflows.queue.base import (
    DEFAULT_GRACE_PERIOD,
    RunHandler,
    WorkQueueUnavailable,
    check_concurrency,
)
from trellis.workflows.queue.taskiq_brokers import BrokerBackend

log = get_logger(__name__)

NUDGE_TASK = "trellis.workflow.nudge"
SHUTDOWN_TIMEOUT = 5.0  # for a broker's shutdown, and for cancelled handler calls to unwind

_receiver_log = logging.getLogger("taskiq.receiver.receiver")
if _receiver_log.level == logging.NOTSET:
    _receiver_log.setLevel(logging.WARNING)


class TaskiqWorkQueue:
    def __init__(
        self,
        backend: BrokerBackend,
        *,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        connect_timeout: float = 5.0,
        submit_timeout: float = 5.0,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.grace_period = grace_period
        self.connect_timeout = connect_timeout
        self.submit_timeout = submit_timeout
        self._opening = asyncio.Lock()
        self._producer: AsyncBroker | None = None
        self._kicker: AsyncKicker[Any, Any] | None = None
        self._consumer: AsyncBroker | None = None
        self._receiver: Receiver | None = None
        self._listener: asyncio.Task[None] | None = None
        self._finish = asyncio.Event()
        self._calls: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._closed = False

    def __repr__(self) -> str:
        return f"TaskiqWorkQueue({self.backend.description})"

    # -- producing ---------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._open()

    async def _open(self) -> AsyncKicker[Any, Any]:
        async with self._opening:
            if self._closed:
                raise WorkQueueUnavailable("The work queue is closed")
            if self._kicker is None:
                broker = self.backend.producer()
                await self._start(broker)
                self._producer = broker
                self._kicker = AsyncKicker(NUDGE_TASK, broker, labels={})
            return self._kicker

    async def submit(self, run_id: str) -> None:
        if self._closed:
            raise WorkQueueUnavailable("The work queue is closed")
        kicker = self._kicker or await self._open()
        try:
            async with asyncio.timeout(self.submit_timeout):
                await kicker.kiq(run_id)
        except TimeoutError as exc:
            raise WorkQueueUnavailable(
                f"{self.backend.description} did not take the nudge within {self.submit_timeout} s"
            ) from exc
        except SendTaskError as exc:
            raise WorkQueueUnavailable(f"{self.backend.description} did not take the nudge: {exc.__cause__!r}") from exc

    # -- consuming ---------------------------------------------------------------------------------

    async def consume(self, handler: RunHandler, *, concurrency: int) -> None:
        check_concurrency(concurrency)
        if self._closed:
            raise WorkQueueUnavailable("The work queue is closed")
        if self._consumer is not None:
            raise RuntimeError("this work queue is already consuming")
        broker = self._consumer = self.backend.consumer(concurrency)
        broker.is_worker_process = True
        broker.register_task(self._nudge_task(handler), task_name=NUDGE_TASK)
        try:
            await self._start(broker)
        except BaseException:
            self._consumer = None
            raise
        receiver = Receiver(
            broker,
            validate_params=False,
            max_async_tasks=concurrency,
            max_prefetch=0,
            run_startup=False,
            ack_type=AcknowledgeType.MANUAL,
            wait_tasks_timeout=self.grace_period,
        )
        self._receiver = receiver
        self._listener = asyncio.create_task(self._listen(receiver), name=f"work-queue:{self.name}")
        log.info("work_queue.consuming", queue=self.backend.description, concurrency=concurrency)

    def _nudge_task(self, handler: RunHandler) -> Any:
        calls, name = self._calls, self.name

        async def nudge(run_id: str, context: Context = TaskiqDepends()) -> None:  # noqa: B008
            call = asyncio.current_task()
            assert call is not None
            calls.add(call)
            try:
                if isinstance(run_id, str):
                    await handler(run_id)
                else:
                    log.warning("work_queue.bad_nudge", queue=name, run_id=repr(run_id))
            except asyncio.CancelledError:
                if self._stopping:
                    # Cut short by close after the grace period: not acknowledged, handed back.
                    log.warning("work_queue.handler_cancelled", queue=name, run_id=run_id)
                    return
                raise
            except Exception:
                log.exception("work_queue.handler_failed", queue=name, run_id=run_id)
            finally:
                calls.discard(call)
            try:
                await context.ack()
            except Exception as exc:  # noqa: BLE001 - any broker's failure: the nudge comes again
                log.warning("work_queue.ack_failed", queue=name, run_id=run_id, error=repr(exc))

        return nudge

    async def _listen(self, receiver: Receiver) -> None:
        """Run the receiver until ``close``; should it fail (it should not: the brokers retry a lost
        connection themselves), log it and listen again."""
        pause = 1.0
        while not self._finish.is_set():
            try:
                await receiver.listen(self._finish)
            except Exception:
                log.exception("work_queue.listener_failed", queue=self.backend.description)
            if self._finish.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finish.wait(), pause)
            pause = min(pause * 2, 30.0)

    # -- both --------------------------------------------------------------------------------------

    async def _start(self, broker: AsyncBroker) -> None:
        unreachable: tuple[type[BaseException], ...] = (TimeoutError, *self.backend.errors)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await broker.startup()
        except unreachable as exc:
            await self._shutdown(broker)
            raise WorkQueueUnavailable(f"Cannot reach {self.backend.description}: {exc!r}") from exc

    async def _shutdown(self, broker: AsyncBroker) -> None:
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                await broker.shutdown()
        except Exception as exc:  # noqa: BLE001 - a broker failing to shut down must not stop the rest
            log.warning("work_queue.shutdown_failed", queue=self.backend.description, error=repr(exc))

    async def close(self) -> None:
        self._closed = True
        listener, self._listener = self._listener, None
        consumer, self._consumer = self._consumer, None
        if listener is not None and self._receiver is not None:
            # The receiver stops fetching, then waits up to the grace period for running calls.
            self._receiver.wait_tasks_timeout = self.grace_period
            self._finish.set()
            await asyncio.wait({listener}, timeout=self.grace_period + SHUTDOWN_TIMEOUT)
            left = set(self._calls)
            if left:
                self._stopping = True
                log.warning("work_queue.cancelling_handlers", queue=self.name, count=len(left))
                for call in left:
                    call.cancel()
                await asyncio.wait(left, timeout=SHUTDOWN_TIMEOUT)
            if not listener.done():
                listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        if consumer is not None:
            await self._shutdown(consumer)
        async with self._opening:
            producer, self._producer, self._kicker = self._producer, None, None
        if producer is not None:
            await self._shutdown(producer)

    async def delete(self) -> None:
        """Remove this queue's stream or queue from the broker, nudges included (tests, operators)."""
        await self.backend.delete()
