"""Work queues: nudges telling a worker that a workflow run has work to do (see ``base``).

``build_work_queue(url, name=...)`` picks the implementation by URL: none or ``memory://`` is the
in-process queue (``memory``); ``redis://``/``rediss://`` Redis Streams, ``nats://`` NATS JetStream,
``amqp://``/``amqps://`` RabbitMQ, all through taskiq (``taskiq_queue``, ``taskiq_brokers``).
"""

from __future__ import annotations

from trellis.workflows.queue.base import (
    DEFAULT_GRACE_PERIOD,
    RunHandler,
    WorkQueue,
    WorkQueueUnavailable,
    check_name,
)
from trellis.workflows.queue.memory import MemoryWorkQueue


def build_work_queue(
    url: str | None,
    *,
    name: str,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    redeliver_after: float = 60.0,
    connect_timeout: float = 5.0,
    submit_timeout: float = 5.0,
) -> WorkQueue:
    """The work queue ``name`` on the broker at ``url``.

    ``name`` (1-64 letters, digits, ``_``, ``-``) namespaces the stream, subject or queue: queues of
    the same URL and name share their nudges. ``grace_period``: seconds ``close`` waits for running
    handler calls. ``redeliver_after``: seconds before a nudge taken by a consumer that died goes to
    another one (Redis, NATS; RabbitMQ redelivers when the connection drops). ``connect_timeout`` and
    ``submit_timeout`` bound ``open``/``consume`` and ``submit``: past them, ``WorkQueueUnavailable``.
    Building connects to nothing.
    """
    check_name(name)
    if url is None or url.strip() in ("", "memory://"):
        return MemoryWorkQueue(name, grace_period=grace_period)
    # Imported here: the embedded deployment never loads taskiq or the broker clients.
    from trellis.workflows.queue.taskiq_brokers import backend_for_url
    from trellis.workflows.queue.taskiq_queue import TaskiqWorkQueue

    backend = backend_for_url(url, name, redeliver_after=redeliver_after, connect_timeout=connect_timeout)
    return TaskiqWorkQueue(
        backend, grace_period=grace_period, connect_timeout=connect_timeout, submit_timeout=submit_timeout
    )


__all__ = [
    "MemoryWorkQueue",
    "RunHandler",
    "WorkQueue",
    "WorkQueueUnavailable",
    "build_work_queue",
]
