"""The work-queue contract: nudges that tell a worker "run <run_id> has work to do".

The database is the source of truth for workflow runs; a worker claims a run there, under a lease.
The queue only carries *nudges*, so that a worker starts a run within milliseconds instead of at its
next poll. A nudge may be lost or delivered twice: the engine polls the database as well and its
claims are conditional, so neither is an error, only a delay or a wasted claim attempt.

Delivery is at least once while things go well: a nudge is acknowledged when its handler call has
finished (returned or raised). A handler call cut short by ``close`` (after the grace period) is not
acknowledged; where the broker can, the nudge is handed back at once for another consumer, otherwise
it is redelivered after the broker's redelivery timeout, like the nudges of a consumer that died.

Two implementations (``build_work_queue`` in the package picks one by URL):

- ``memory.MemoryWorkQueue``: in-process, for the embedded deployment (API and worker in one process);
- ``taskiq_queue.TaskiqWorkQueue``: Redis Streams, NATS JetStream or RabbitMQ through taskiq, for
  API replicas that only submit and ``trellis worker`` processes that consume.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Protocol

from trellis.kit.errors import Unavailable

RunHandler = Callable[[str], Awaitable[None]]
"""Called with a run id for each nudge a consumer takes."""

# Letters, digits, "_" and "-": valid as a Redis key part, a NATS stream name and subject token, and a
# RabbitMQ queue name alike.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

DEFAULT_GRACE_PERIOD = 30.0
"""Seconds ``close`` waits for in-flight handler calls before cancelling them."""


class WorkQueueUnavailable(Unavailable):
    """The broker cannot be reached (or did not answer in time): the nudge was not sent."""

    default_message = "Work queue unavailable"


class WorkQueue(Protocol):
    """A named queue of run nudges.

    A producer (an API replica) calls ``open`` once and ``submit`` per run; a worker calls ``consume``
    once; both call ``close`` at shutdown. One object may produce and consume. Queues built with the
    same URL and name share their nudges, across processes (brokers) or within one (memory).
    """

    name: str
    grace_period: float
    """Seconds ``close`` waits for in-flight handler calls; set it before calling ``close``."""

    async def open(self) -> None:
        """Connect as a producer. Raises ``WorkQueueUnavailable`` if the broker cannot be reached."""
        ...

    async def submit(self, run_id: str) -> None:
        """Enqueue one nudge for ``run_id`` (opening first if needed).

        Raises ``WorkQueueUnavailable``, within a bounded time, if the broker cannot take it (or the
        queue is closed).
        """
        ...

    async def consume(self, handler: RunHandler, *, concurrency: int) -> None:
        """Start consuming in the background and return once consuming has started.

        At most ``concurrency`` handler calls run at a time. A handler that raises is logged and the
        nudge is acknowledged; consuming goes on. Raises ``WorkQueueUnavailable`` if the broker cannot
        be reached.
        """
        ...

    async def close(self) -> None:
        """Stop taking nudges, wait up to ``grace_period`` for in-flight handler calls, cancel what
        is left (those nudges are not acknowledged), and disconnect. Idempotent."""
        ...


def check_name(name: str) -> str:
    """A queue name: 1-64 letters, digits, ``_`` or ``-``, starting with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"work queue name {name!r}: use 1-64 letters, digits, '_' or '-'")
    return name


def check_concurrency(concurrency: int) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
    return concurrency
