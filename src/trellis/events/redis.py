"""The Redis event bus: replicas sharing one Redis see each other's messages.

Publishing is one Lua script per message (``PUBLISH_LUA``): it takes the topic's next id (``INCR``)
or records the publisher's own, and publishes the frame with that id in it, atomically, so ids on a
topic reach every subscriber in order. Many publications go out in one pipelined round trip.

Each process holds ONE pub/sub connection (its own client, no socket timeout, named
``trellis-bus-<token>`` so operators can see it in ``CLIENT LIST``) and fans what arrives out to its
local subscriptions: a channel is ``SUBSCRIBE``d when its first local subscriber arrives and
``UNSUBSCRIBE``d when its last one leaves. ``Subscription.add`` returns after Redis confirmed the
``SUBSCRIBE``, so a caller that then reads the database misses nothing published afterwards.

When the pub/sub connection is lost (an error, or nothing heard for three pings), the bus reports
itself degraded, keeps delivering this process's own publications to its local subscribers, and
reconnects with backoff; once subscribed again, every topic followed across the outage gets a
``Gap`` (messages from other replicas may have been missed meanwhile). A publish that fails is
delivered locally too, and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from trellis.events.base import (
    BUS_CLOSED,
    BusHealth,
    Delivery,
    Fanout,
    Publication,
    Subscription,
    frame_prefix,
    id_of_frame,
)
from trellis.kit.logging import get_logger

log = get_logger(__name__)

# KEYS[1]: the topic's last-id key. ARGV: channel, frame prefix (up to the id), the publisher's id
# or "" (then the bus assigns the next one), the key's TTL in seconds. Returns the id.
PUBLISH_LUA = """
local id
if ARGV[3] == '' then
  id = redis.call('INCR', KEYS[1])
else
  id = tonumber(ARGV[3])
  local last = tonumber(redis.call('GET', KEYS[1]) or '0')
  if id > last then redis.call('SET', KEYS[1], ARGV[3]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. string.format('%d', id) .. '}')
return id
"""

CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
CLOSED = "closed"
_ERRORS = (RedisError, OSError, TimeoutError)


class _ConnectionLost(Exception):
    pass


class RedisEventBus:
    backend = "redis"

    def __init__(
        self,
        client: Redis,
        url: str,
        *,
        prefix: str = "trellis:",
        queue_size: int = 1_000,
        ping_seconds: float = 5.0,
        reconnect_seconds: float = 0.5,
        max_reconnect_seconds: float = 10.0,
        id_ttl_seconds: int = 7 * 86_400,
        timeout_seconds: float = 0.25,
        confirm_timeout_seconds: float = 2.0,
        publish_timeout_seconds: float = 2.0,
    ) -> None:
        self._client = client  # the runtime's (pooled) client: publishing and last ids
        self._url = url
        self._channels = f"{prefix}events:"
        self._ids = f"{prefix}events:id:"
        self._control = f"{prefix}events:~bus"  # always subscribed: a pub/sub connection needs one
        self._queue_size = queue_size
        self._ping = ping_seconds
        self._reconnect = reconnect_seconds
        self._max_reconnect = max_reconnect_seconds
        self._ttl = str(id_ttl_seconds)
        self._timeout = timeout_seconds
        self._confirm_timeout = confirm_timeout_seconds
        # Publishing runs off the request path (the run-event publisher's task), so it may wait longer
        # than a request would for Redis: a busy event loop (a large fan-out) must not make a publish
        # that Redis did serve look failed.
        self._publish_timeout = max(publish_timeout_seconds, timeout_seconds)
        self._sha: str | None = None
        self._fanout = Fanout()
        self._pubsub: PubSub | None = None
        self._sub_client: Redis | None = None
        self._state = CONNECTING
        self._detail: str | None = None
        self._confirms: dict[str, deque[asyncio.Future[None]]] = {}
        self._outage: set[str] = set()  # followed while not connected: they get a gap on connect
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.client_name = f"trellis-bus-{secrets.token_hex(6)}"
        self.connections = 0  # pub/sub connections made so far (tests wait on reconnects)
        self.state_changed = asyncio.Condition()

    # -- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, *, max_queue: int | None = None) -> Subscription:
        return Subscription(self, max_queue or self._queue_size)

    async def attach(self, subscription: Subscription, topic: str) -> None:
        first = self._fanout.join(subscription, topic)
        if self._state == CONNECTING and self._task is not None:
            # Starting up: wait (briefly) for the first connection rather than report a gap at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._confirm_timeout):
                    await self._connected.wait()
        if self._state != CONNECTED or self._pubsub is None:
            self._outage.add(topic)
            return
        pending = self._confirms.get(topic)
        if first:
            confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirms.setdefault(topic, deque()).append(confirm)
            try:
                await self._pubsub.subscribe(self._channels + topic)
            except _ERRORS as exc:
                self._outage.add(topic)  # the reader sees the connection go and reconnects
                log.warning("event_bus_subscribe_failed", error=type(exc).__name__)
                return
        elif pending:
            confirm = pending[-1]
        else:
            return
        try:
            async with asyncio.timeout(self._confirm_timeout):
                await asyncio.shield(confirm)
        except TimeoutError:
            self._outage.add(topic)
            log.warning("event_bus_subscribe_unconfirmed", timeout=self._confirm_timeout)

    async def detach(self, subscription: Subscription, topic: str) -> None:
        if not self._fanout.leave(subscription, topic):
            return
        self._outage.discard(topic)
        if self._state == CONNECTED and self._pubsub is not None:
            # On an error the connection is going; the next one subscribes only to followed topics.
            with contextlib.suppress(*_ERRORS):
                await self._pubsub.unsubscribe(self._channels + topic)

    # -- publishing -------------------------------------------------------------------------------

    async def publish(self, topic: str, message: Mapping[str, Any], *, id: int | None = None) -> int | None:
        return (await self.publish_many([(topic, message, id)]))[0]

    async def publish_many(self, items: Sequence[Publication]) -> list[int | None]:
        if not items:
            return []
        prefixes = [frame_prefix(message, topic) for topic, message, _ in items]
        try:
            ids = await self._send(items, prefixes)
        except _ERRORS as exc:
            log.warning("event_bus_publish_failed", error=type(exc).__name__, messages=len(items))
            # Degraded: this process's subscribers still get it; other replicas' may not.
            out: list[int | None] = []
            for (topic, _, id), prefix in zip(items, prefixes, strict=True):
                self._fanout.deliver(Delivery(topic, id, f"{prefix}{'null' if id is None else id}}}"))
                out.append(id)
            return out
        if self._state != CONNECTED:
            # Our own SUBSCRIBEs are down: Redis will not bring these back to us.
            for (topic, _, _), prefix, id in zip(items, prefixes, ids, strict=True):
                self._fanout.deliver(Delivery(topic, id, f"{prefix}{id}}}"))
        return list(ids)

    async def _send(self, items: Sequence[Publication], prefixes: list[str]) -> list[int]:
        async with asyncio.timeout(self._publish_timeout * max(1, len(items) // 100 + 1)):
            if self._sha is None:
                self._sha = str(await self._client.script_load(PUBLISH_LUA))
            try:
                return await self._evalsha(items, prefixes, self._sha)
            except NoScriptError:  # Redis restarted or its scripts were flushed
                self._sha = str(await self._client.script_load(PUBLISH_LUA))
                return await self._evalsha(items, prefixes, self._sha)

    async def _evalsha(self, items: Sequence[Publication], prefixes: list[str], sha: str) -> list[int]:
        def args(topic: str, prefix: str, id: int | None) -> list[Any]:
            return [self._ids + topic, self._channels + topic, prefix, "" if id is None else str(id), self._ttl]

        if len(items) == 1:
            topic, _, id = items[0]
            return [int(await self._client.evalsha(sha, 1, *args(topic, prefixes[0], id)))]
        async with self._client.pipeline(transaction=False) as pipe:
            for (topic, _, id), prefix in zip(items, prefixes, strict=True):
                pipe.evalsha(sha, 1, *args(topic, prefix, id))
            results = await pipe.execute()
        return [int(result) for result in results]

    async def last_id(self, topic: str) -> int | None:
        try:
            async with asyncio.timeout(self._timeout):
                value = await self._client.get(self._ids + topic)
        except _ERRORS:
            return None
        return 0 if value is None else int(value)

    # -- health -----------------------------------------------------------------------------------

    def health(self) -> BusHealth:
        if self._state == CONNECTED:
            return BusHealth(self.backend, True, CONNECTED)
        detail = "delivering to this process's subscribers only; they get a gap when Redis is back"
        if self._detail:
            detail = f"{self._detail}; {detail}"
        return BusHealth(self.backend, False, self._state, detail)

    async def probe(self) -> BusHealth:
        if self._state == CONNECTING and self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._confirm_timeout):
                    await self._connected.wait()
        return self.health()

    @property
    def subscriber_count(self) -> int:
        return self._fanout.subscriber_count

    @property
    def state(self) -> str:
        return self._state

    async def _set_state(self, state: str, detail: str | None = None) -> None:
        self._state, self._detail = state, detail
        if state == CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()
        async with self.state_changed:
            self.state_changed.notify_all()

    # -- the pub/sub connection -------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-bus-redis")

    async def _run(self) -> None:
        delay = self._reconnect
        while True:
            try:
                await self._connect()
            except _ERRORS as exc:
                await self._lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect)
                continue
            delay = self._reconnect
            try:
                await self._read()
            except (*_ERRORS, _ConnectionLost) as exc:
                await self._lost(exc)

    async def _connect(self) -> None:
        await self._drop_connection()
        client = Redis.from_url(
            self._url,
            socket_timeout=None,
            socket_connect_timeout=max(self._timeout, 1.0),
            client_name=self.client_name,
            # No silent reconnects inside redis-py: a lost connection must surface here (gaps).
            retry=Retry(NoBackoff(), 0),
        )
        self._sub_client = client
        pubsub = client.pubsub(ignore_subscribe_messages=False)
        self._pubsub = pubsub
        self._confirms.clear()
        # Subscribe to every followed topic, and again to those followed meanwhile, until none is new.
        subscribed: set[str] = set()
        waiting = {self._control}
        await pubsub.subscribe(self._control)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._confirm_timeout
        while True:
            new = set(self._fanout.topics) - subscribed
            if new:
                subscribed |= new
                channels = {self._channels + topic for topic in new}
                waiting |= channels
                await pubsub.subscribe(*channels)
            if not waiting:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("SUBSCRIBE not confirmed")
            received = await pubsub.get_message(ignore_subscribe_messages=False, timeout=remaining)
            if received is None:
                continue
            if received["type"] == "subscribe":
                waiting.discard(_text(received["channel"]))
            else:
                self._handle(received)
        topics = subscribed
        self.connections += 1
        missed = self._outage & set(self._fanout.topics)
        self._outage.clear()
        if self.connections > 1:
            missed |= set(topics) & set(self._fanout.topics)
        await self._set_state(CONNECTED)
        log.info("event_bus_connected", topics=len(self._fanout.topics), gaps=len(missed))
        self._fanout.gap(sorted(missed), "bus_reconnected")

    async def _read(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while True:
            received = await pubsub.get_message(ignore_subscribe_messages=False, timeout=self._ping)
            now = loop.time()
            if received is not None:
                heard = now
                self._handle(received)
                continue
            if now - heard >= 3 * self._ping:
                raise _ConnectionLost(f"nothing heard for {now - heard:.1f} s")
            if now - pinged >= self._ping:
                pinged = now
                await pubsub.ping()

    def _handle(self, received: dict[str, Any]) -> None:
        kind = received["type"]
        if kind == "message":
            channel = _text(received["channel"])
            if not channel.startswith(self._channels):
                return
            frame = _text(received["data"])
            self._fanout.deliver(Delivery(channel[len(self._channels) :], id_of_frame(frame), frame))
        elif kind == "subscribe":
            channel = _text(received["channel"])
            if channel.startswith(self._channels):
                pending = self._confirms.get(channel[len(self._channels) :])
                if pending:
                    confirm = pending.popleft()
                    if not pending:
                        del self._confirms[channel[len(self._channels) :]]
                    if not confirm.done():
                        confirm.set_result(None)

    async def _lost(self, exc: BaseException) -> None:
        if self._state == CONNECTED:
            log.warning("event_bus_connection_lost", error=type(exc).__name__, message=str(exc)[:200])
        self._outage |= set(self._fanout.topics)
        for pending in self._confirms.values():
            for confirm in pending:
                if not confirm.done():
                    confirm.set_result(None)  # waiters go on; their topics are in the outage set
        self._confirms.clear()
        await self._set_state(DISCONNECTED, f"Redis pub/sub connection lost ({type(exc).__name__})")
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        pubsub, client, self._pubsub, self._sub_client = self._pubsub, self._sub_client, None, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()
        await self._set_state(CLOSED)
        self._fanout.drop_all(BUS_CLOSED, "the server is shutting down")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
