"""The in-process event bus (embedded default): publish hands the frame straight to this process's
subscribers; nothing to connect, nothing to lose but a slow subscriber."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from trellis.events.base import (
    BUS_CLOSED,
    BusHealth,
    Delivery,
    Fanout,
    Publication,
    Subscription,
    frame_of,
)

# Topics whose last id is remembered; the least recently published is forgotten past this (a
# client resuming on it gets a gap, and a bus-assigned counter starts again from 1).
MAX_REMEMBERED_TOPICS = 100_000


class MemoryEventBus:
    backend = "memory"

    def __init__(self, *, queue_size: int = 1_000, max_topics: int = MAX_REMEMBERED_TOPICS) -> None:
        self._queue_size = queue_size
        self._max_topics = max_topics
        self._fanout = Fanout()
        self._last: OrderedDict[str, int] = OrderedDict()
        self._closed = False

    def subscribe(self, *, max_queue: int | None = None) -> Subscription:
        return Subscription(self, max_queue or self._queue_size)

    async def attach(self, subscription: Subscription, topic: str) -> None:
        self._fanout.join(subscription, topic)

    async def detach(self, subscription: Subscription, topic: str) -> None:
        self._fanout.leave(subscription, topic)

    def publish_now(self, topic: str, message: Mapping[str, Any], id: int | None = None) -> int:
        """``publish`` without awaiting anything (no await between id and delivery: atomic)."""
        last = self._last.get(topic, 0)
        if id is None:
            id = last + 1
        if id > last or topic not in self._last:
            self._last[topic] = max(id, last)
        self._last.move_to_end(topic)
        if len(self._last) > self._max_topics:
            self._last.popitem(last=False)
        self._fanout.deliver(Delivery(topic, id, frame_of(message, topic, id)))
        return id

    async def publish(self, topic: str, message: Mapping[str, Any], *, id: int | None = None) -> int | None:
        return self.publish_now(topic, message, id)

    async def publish_many(self, items: Sequence[Publication]) -> list[int | None]:
        return [self.publish_now(topic, message, id) for topic, message, id in items]

    async def last_id(self, topic: str) -> int | None:
        return self._last.get(topic, 0)

    def health(self) -> BusHealth:
        return BusHealth(self.backend, True, "in-process")

    async def probe(self) -> BusHealth:
        return self.health()

    def start(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        self._fanout.drop_all(BUS_CLOSED, "the server is shutting down")

    @property
    def subscriber_count(self) -> int:
        return self._fanout.subscriber_count
