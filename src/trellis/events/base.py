"""The event bus contract, and what both backends share: messages, frames, subscriptions, fan-out.

A publisher sends a *message* in the seed's WebSocket shape ``{type, component, event, data,
timestamp}`` to a *topic* (``user:<id>``, ``run:<id>``, ``generation:<id>``, ``dashboard``). Each
message gets an ``id`` that grows per topic: the publisher's own where it has one (a workflow run's
events use their ``seq`` in the database, so a client can resume from the database), else one the
bus assigns (atomically with the publish on Redis). The bus turns the message into its *frame* once,
the JSON text a WebSocket client receives (the message plus ``topic`` and ``id``), so fanning one
message out to a thousand subscribers encodes it once.

A ``Subscription`` follows any number of topics (``add``/``remove`` at any time; ``add`` returns
once messages published afterwards will arrive) through one bounded queue, iterated with ``async
for``. Publishing never waits for a subscriber: one whose queue is full is dropped, and its
iteration raises ``SubscriptionClosed`` with the reason. Where the bus may have lost messages (its
Redis connection dropped and came back), each affected topic gets a ``Gap`` item instead of a
silent hole. The bus is an accelerator: whatever a user must not miss is also in the database.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from trellis.kit.logging import get_logger

log = get_logger(__name__)

MessageType = Literal["update", "error", "complete"]
Component = Literal["ai", "workflow", "dashboard"]
TOPIC_KINDS = ("user", "run", "generation")
DASHBOARD = "dashboard"

# Why a subscription was closed by the bus (not by its owner).
SLOW_CONSUMER = "slow_consumer"
BUS_CLOSED = "bus_closed"


def user_topic(user_id: str) -> str:
    return f"user:{user_id}"


def run_topic(run_id: str) -> str:
    return f"run:{run_id}"


def generation_topic(generation_id: str) -> str:
    return f"generation:{generation_id}"


def message(
    type_: MessageType, component: Component, event: str, data: Mapping[str, Any], timestamp: str
) -> dict[str, Any]:
    """The seed's WebSocket message: ``{type, component, event, data, timestamp}``."""
    return {"type": type_, "component": component, "event": event, "data": data, "timestamp": timestamp}


def frame_prefix(message: Mapping[str, Any], topic: str) -> str:
    """The frame up to its id: ``{...message...,"topic":"<topic>","id":`` (the id and ``}`` follow)."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if not body.endswith("}") or body == "{}":
        raise ValueError("a message is a non-empty JSON object")
    return f'{body[:-1]},"topic":{json.dumps(topic, ensure_ascii=False)},"id":'


def frame_of(message: Mapping[str, Any], topic: str, id: int | None) -> str:
    return f"{frame_prefix(message, topic)}{'null' if id is None else id}}}"


def id_of_frame(frame: str) -> int | None:
    """The id at the end of a frame made by ``frame_of`` (no JSON parse)."""
    tail = frame[frame.rindex(":") + 1 : -1]
    return None if tail == "null" else int(tail)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One published message as a subscriber receives it."""

    topic: str
    id: int | None
    frame: str

    def message(self) -> dict[str, Any]:
        """The frame parsed (the message plus ``topic`` and ``id``)."""
        parsed: dict[str, Any] = json.loads(self.frame)
        return parsed


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of ``topic`` may have been lost here (the bus's connection dropped and came back)."""

    topic: str
    reason: str


Item = Delivery | Gap


class SubscriptionClosed(Exception):
    """The bus dropped the subscription (``reason``: ``slow_consumer``, ``bus_closed``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


@dataclass(frozen=True, slots=True)
class BusHealth:
    """What ``/ready`` says about the bus. ``ok`` false: degraded (messages reach only this process's
    subscribers, and they get a ``gap`` when the bus is whole again)."""

    backend: str
    ok: bool
    state: str
    detail: str | None = None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "backend": self.backend, "state": self.state}
        if self.detail:
            out["detail"] = self.detail
        return out


class Attachable(Protocol):
    async def attach(self, subscription: Subscription, topic: str) -> None: ...

    async def detach(self, subscription: Subscription, topic: str) -> None: ...


class Subscription:
    """Topics followed through one bounded queue. Made by ``EventBus.subscribe``; iterate it with
    ``async for`` (or ``get``); close it with ``aclose`` (or ``async with``)."""

    def __init__(self, bus: Attachable, max_queue: int) -> None:
        self._bus = bus
        self._max = max_queue
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.topics: set[str] = set()
        self._closed = False
        self._dropped: SubscriptionClosed | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> SubscriptionClosed | None:
        """Why the bus dropped this subscription, if it did."""
        return self._dropped

    def pending(self) -> int:
        return len(self._items)

    async def add(self, topic: str) -> None:
        """Follow ``topic``; returns once what is published to it from now on will arrive."""
        if self._closed:
            raise self._dropped or SubscriptionClosed("closed")
        if topic in self.topics:
            return
        self.topics.add(topic)
        try:
            await self._bus.attach(self, topic)
        except BaseException:
            self.topics.discard(topic)
            raise

    async def remove(self, topic: str) -> None:
        if topic in self.topics:
            self.topics.discard(topic)
            await self._bus.detach(self, topic)

    # -- the bus's side (never blocks) ------------------------------------------------------------

    def offer(self, item: Item) -> None:
        if self._closed or item.topic not in self.topics:
            return
        if len(self._items) >= self._max:
            self.drop(SLOW_CONSUMER, f"slow consumer: more than {self._max} messages behind")
            return
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drop(self, reason: str, detail: str = "") -> None:
        """Close from the bus's side: what is queued is discarded and the reader learns why."""
        if self._closed:
            return
        self._closed = True
        self._dropped = SubscriptionClosed(reason, detail)
        self._items.clear()
        if reason != BUS_CLOSED:  # at shutdown every subscription goes: not worth a line each
            log.info("subscription_dropped", reason=reason, topics=len(self.topics))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        # Detach from the bus without waiting (a Redis UNSUBSCRIBE is sent in the background).
        topics, self.topics = set(self.topics), set()
        for topic in topics:
            _background(self._bus.detach(self, topic))

    # -- the reader's side ------------------------------------------------------------------------

    def get_nowait(self) -> Item | None:
        if self._items:
            return self._items.popleft()
        if self._dropped is not None:
            raise self._dropped
        return None

    async def get(self) -> Item:
        """The next item; ``SubscriptionClosed`` if the bus dropped this subscription,
        ``StopAsyncIteration`` once its owner closed it."""
        while True:
            if self._items:
                return self._items.popleft()
            if self._dropped is not None:
                raise self._dropped
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        return await self.get()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        topics, self.topics = set(self.topics), set()
        for topic in topics:
            await self._bus.detach(self, topic)
        self._items.clear()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


_tasks: set[asyncio.Task[Any]] = set()


def _background(coroutine: Any) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class Fanout:
    """This process's subscriptions by topic: where both backends hand deliveries to subscribers."""

    def __init__(self) -> None:
        self.topics: dict[str, set[Subscription]] = {}

    def join(self, subscription: Subscription, topic: str) -> bool:
        """True when ``topic`` had no subscriber here before."""
        members = self.topics.get(topic)
        if members is None:
            self.topics[topic] = {subscription}
            return True
        members.add(subscription)
        return False

    def leave(self, subscription: Subscription, topic: str) -> bool:
        """True when ``topic`` has no subscriber here any more."""
        members = self.topics.get(topic)
        if members is None:
            return False
        members.discard(subscription)
        if members:
            return False
        del self.topics[topic]
        return True

    def deliver(self, item: Item) -> int:
        members = self.topics.get(item.topic)
        if not members:
            return 0
        # A copy: a subscriber dropped for overflow leaves the set while it is walked.
        for subscription in tuple(members):
            subscription.offer(item)
        return len(members)

    def gap(self, topics: Iterable[str], reason: str) -> None:
        for topic in topics:
            self.deliver(Gap(topic, reason))

    def drop_all(self, reason: str, detail: str) -> None:
        for members in list(self.topics.values()):
            for subscription in tuple(members):
                subscription.drop(reason, detail)
        self.topics.clear()

    @property
    def subscriber_count(self) -> int:
        return len({id(s) for members in self.topics.values() for s in members})


Publication = tuple[str, Mapping[str, Any], int | None]


class EventBus(Protocol):
    """Publish/subscribe by topic. ``MemoryEventBus`` (one process) and ``RedisEventBus`` (replicas
    sharing a Redis) keep the same contract (``tests/events/test_contract.py``)."""

    backend: str

    def subscribe(self, *, max_queue: int | None = None) -> Subscription:
        """A new subscription (no topics yet); ``max_queue`` overrides ``[events] queue_size``."""
        ...

    async def publish(self, topic: str, message: Mapping[str, Any], *, id: int | None = None) -> int | None:
        """Send ``message`` to ``topic``'s subscribers in every process. ``id`` is the publisher's
        (monotonic per topic) or, when None, assigned by the bus; returns the id it went out with
        (None only when the bus is degraded and had none to give)."""
        ...

    async def publish_many(self, items: Sequence[Publication]) -> list[int | None]:
        """Several publications in order (one round trip on Redis)."""
        ...

    async def last_id(self, topic: str) -> int | None:
        """The highest id published to ``topic`` (0: none yet or forgotten; None: unknown now)."""
        ...

    def health(self) -> BusHealth: ...

    async def probe(self) -> BusHealth:
        """``health()`` for ``/ready``: a bus still making its first connection is given a moment."""
        ...

    def start(self) -> None:
        """Start background work (call from a running event loop)."""
        ...

    async def close(self) -> None:
        """Drop every subscription (``bus_closed``) and release connections."""
        ...
