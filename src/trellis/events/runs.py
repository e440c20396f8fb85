"""Workflow run events on the bus: how a committed run event becomes the seed's message, the
publisher the workflow engine and service hand their committed events to, and ``RunFeed``, which
merges the database and the bus into one exactly-once, in-order stream of a run's events.

A run's events are in the database first (``workflow_events``, numbered per run by ``seq``); the
bus only carries them faster. On ``run:<id>`` each goes out with ``id = seq``, so a client that
missed some (a disconnect, a ``gap``, a hole in the ids) reads them back from the database. The
owner's ``user:<id>`` feed gets the same message with a bus-assigned id, and ``dashboard`` (admins)
gets each run's start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from trellis.events.base import (
    DASHBOARD,
    Delivery,
    EventBus,
    MessageType,
    Publication,
    frame_of,
    message,
    run_topic,
    user_topic,
)
from trellis.kit.clock import utc_timestamp
from trellis.kit.logging import get_logger
from trellis.workflows.schemas import EventOut

log = get_logger(__name__)

START = "workflow_execution_start"
PROGRESS = "workflow_execution_progress"
COMPLETE = "workflow_execution_complete"
TERMINAL = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
# How a frame of a run's last event starts (the message's keys come in a fixed order, before data):
# checked on the frame's head, so a live delivery is not parsed once per subscriber.
_LAST_EVENT_MARK = f'"component":"workflow","event":"{COMPLETE}"'


def seed_event(kind: str) -> tuple[MessageType, str]:
    """A run event's type (``run.queued``, ``step.succeeded``, ...) as the seed's (type, event)."""
    if kind == "run.queued":
        return "update", START
    if kind in TERMINAL:
        return ("error" if kind == "run.failed" else "complete"), COMPLETE
    return "update", PROGRESS


def run_message(run_id: str, seq: int, kind: str, step: str | None, data: Any, at: datetime) -> dict[str, Any]:
    """The seed's message for one run event; its data is the REST door's ``EventOut`` plus ``run_id``."""
    type_, event = seed_event(kind)
    out = EventOut(seq=seq, type=kind, step=step, data=data, at=at).model_dump(mode="json")
    return message(type_, "workflow", event, {"run_id": run_id, **out}, utc_timestamp(at))


def row_message(row: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``run_message`` of an event row: a ``WorkflowEvent`` or the engine's dict of one."""
    if isinstance(row, Mapping):
        return run_message(row["run_id"], row["seq"], row["type"], row["step"], row["data"], row["at"])
    return run_message(row.run_id, row.seq, row.type, row.step, row.data, row.at)


def row_delivery(row: Any) -> Delivery:
    """A stored event as the bus would have delivered it on ``run:<id>``."""
    return Delivery(run_topic(row.run_id), row.seq, frame_of(row_message(row), run_topic(row.run_id), row.seq))


def is_last_event(frame: str) -> bool:
    """Whether a run topic's frame is a terminal event (succeeded, failed, cancelled)."""
    return _LAST_EVENT_MARK in frame[:120]


def event_out(delivery: Delivery) -> EventOut:
    """A run topic's delivery as the REST door's ``EventOut`` (what the SSE stream carries)."""
    return EventOut.model_validate(delivery.message()["data"])


class RunEventPublisher:
    """The workflow engine's and service's ``on_events`` sink: called after each commit with the
    events it wrote; queues them (never blocks the caller) and publishes them in order from one
    background task, many per round trip."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.published = 0

    def __call__(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        if self._closing or not events:
            return
        self._queue.extend(events)
        self._wake.set()
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing live to tell
                self._task = asyncio.get_running_loop().create_task(self._run(), name="run-event-publisher")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 256))]
                try:
                    await self._bus.publish_many(publications(batch))
                    self.published += len(batch)
                except Exception as exc:  # noqa: BLE001 - the events are in the database; a live client resyncs
                    log.warning("run_events_publish_failed", error=type(exc).__name__, events=len(batch))
            if self._closing:
                return

    async def close(self) -> None:
        """Publish what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task


def publications(events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Publication]:
    out: list[Publication] = []
    for owner_id, row in events:
        msg = row_message(row)
        out.append((run_topic(row["run_id"]), msg, row["seq"]))
        out.append((user_topic(owner_id), msg, None))
        if row["type"] == "run.queued" or row["type"] in TERMINAL:
            data = {"run_id": row["run_id"], "owner_id": owner_id, "seq": row["seq"], "type": row["type"]}
            data["at"] = msg["data"]["at"]
            out.append((DASHBOARD, {**msg, "component": "dashboard", "data": data}, None))
    return out


ReadAfter = Callable[[int], Awaitable[Sequence[Any]]]


class RunFeed:
    """One run's events exactly once and in order, whatever mix of database reads and bus
    deliveries brings them: ``catch_up`` reads what follows ``last`` from the database; ``offer``
    takes a live delivery (a duplicate or an old one is dropped; one after a hole makes it read
    the hole from the database first). ``read_after(seq)`` returns the stored events after
    ``seq`` (a page; it is called again until a page comes back short)."""

    def __init__(self, read_after: ReadAfter, last: int = 0, *, page: int = 500) -> None:
        self._read_after = read_after
        self.last = last
        self._page = page
        self.ended = False  # a terminal event went by (a retry may still follow)

    async def catch_up(self) -> list[Delivery]:
        out: list[Delivery] = []
        while True:
            rows = await self._read_after(self.last)
            for row in rows:
                if row.seq > self.last:
                    out.append(self._take(row_delivery(row), row.type in TERMINAL))
            if len(rows) < self._page:
                return out

    async def offer(self, delivery: Delivery) -> list[Delivery]:
        seq = delivery.id
        if seq is None or seq <= self.last:
            return []
        if seq == self.last + 1:
            return [self._take(delivery, is_last_event(delivery.frame))]
        # A hole: what is missing (and this one) is in the database, committed before it was published.
        out = await self.catch_up()
        if delivery.id is not None and delivery.id > self.last:
            out.append(self._take(delivery, is_last_event(delivery.frame)))
        return out

    def _take(self, delivery: Delivery, ended: bool) -> Delivery:
        assert delivery.id is not None
        self.last = delivery.id
        self.ended = ended
        return delivery
