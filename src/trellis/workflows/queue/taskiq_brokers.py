"""The taskiq brokers behind ``TaskiqWorkQueue``, one per URL scheme, and how each names its queue.

Each backend builds two kinds of broker: a producer (API replicas: connect, declare, publish) and a
consumer (``trellis worker``: the same plus a subscription). A work queue named ``N`` is:

=============  =============================================================================
Redis          stream ``trellis:work-queue:N``, consumer group ``workers``
NATS           JetStream stream ``trellis-work-queue-N`` (work-queue retention) on subject
               ``trellis.work-queue.N``, durable pull consumer ``workers``
RabbitMQ       quorum queue ``trellis.work-queue.N`` bound to the direct exchange
               ``trellis.work-queue``
=============  =============================================================================

Every consumer acknowledges a nudge when its handler call finishes. ``redeliver_after`` is how long
an unacknowledged nudge of a consumer that died waits before another consumer gets it (Redis: the
idle time before ``XAUTOCLAIM``; NATS: ``ack_wait``; RabbitMQ redelivers as soon as the dead
consumer's connection drops). A live consumer keeps the nudges it is working on from being redelivered
(Redis: ``XCLAIM`` to itself, NATS: ``in_progress``, every third of ``redeliver_after``), so a
handler may run far longer than ``redeliver_after``; and on shutdown it hands back the nudges it took
but did not finish (Redis: made idle at once; NATS: ``nak``; RabbitMQ: the channel closes), so another
consumer gets them within about a second.

Quirks of the upstream brokers (taskiq-redis 1.2.4, taskiq-nats 0.7.0, taskiq-aio-pika 0.6.1) that
the subclasses here work around:

- ``RedisStreamBroker.listen`` runs ``XAUTOCLAIM`` only after an ``XREADGROUP`` that returned
  messages, so on a quiet stream a dead consumer's messages are never reclaimed; it reads 100
  messages at a time (one busy worker hoards them, and those it has not started wait for the idle
  timeout when it stops); its default group start id ``$`` skips what was added before the group
  existed; acknowledged entries stay in the stream; a dropped connection ends ``listen`` with an
  error. ``NudgeStreamBroker.listen`` replaces it.
- ``PullBasedJetStreamBroker`` creates the durable consumer and a pull subscription on every
  ``startup``, producers included; its default stream keeps every message forever (limits
  retention); its default fetch has no expiry.
- nats-py retries a failed first connection ``max_reconnect_attempts`` times, ``reconnect_time_wait``
  (2 s) apart: an unreachable NATS makes ``startup`` hang for minutes, so the caller bounds it.
- ``AioPikaBroker`` opens its reading connection only when ``is_worker_process`` is set before
  ``startup``; its ``qos`` (prefetch) is per consumer and is set to the concurrency here.
- RabbitMQ closes a channel whose delivery stays unacknowledged longer than its ``consumer_timeout``
  (30 minutes by default, a server setting): a handler call that long gets its nudge redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any, Protocol, cast

import aio_pika
import aiormq
import nats
import nats.errors
import nats.js.errors
import pamqp.exceptions
from nats.aio.msg import Msg as NatsMsg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType
from taskiq_nats import PullBasedJetStreamBroker
from taskiq_redis import RedisStreamBroker

from trellis.kit.logging import get_logger

log = get_logger(__name__)

GROUP = "workers"
# A bound on nudges waiting in a stream; beyond it the oldest are dropped (the database poll finds
# their runs).
MAX_WAITING = 100_000


def consumer_tag() -> str:
    """A consumer name that says where it runs: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class BrokerBackend(Protocol):
    """What ``TaskiqWorkQueue`` needs from one kind of broker."""

    name: str
    description: str
    errors: tuple[type[BaseException], ...]
    """What "the broker cannot be reached" raises, besides ``TimeoutError``."""

    def producer(self) -> AsyncBroker: ...

    def consumer(self, concurrency: int) -> AsyncBroker: ...

    async def delete(self) -> None:
        """Remove the queue's stream or queue from the broker, with every nudge in it."""
        ...


def backend_for_url(url: str, name: str, *, redeliver_after: float, connect_timeout: float) -> BrokerBackend:
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        return RedisStreams(url, name, redeliver_after=redeliver_after, connect_timeout=connect_timeout)
    if scheme == "nats":
        return NatsJetStream(url, name, redeliver_after=redeliver_after, connect_timeout=connect_timeout)
    if scheme in ("amqp", "amqps"):
        return RabbitMQ(url, name, connect_timeout=connect_timeout)
    raise ValueError(
        f"work queue URL scheme {scheme!r}: use memory://, redis://, rediss://, nats://, amqp:// or amqps://"
    )


def _raise_if_cancelled() -> None:
    """Raise the cancellation a library call swallowed.

    On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising ``CancelledError``
    when the cancellation arrives as the awaited call completes (CPython gh-86296, fixed in 3.12).
    redis-py 8 sends every command under ``wait_for`` (its default ``socket_timeout`` is 5 s) and
    nats-py waits for every message with it, so a listener cancelled at that instant carried on
    reading (seen about once in 40 closes): the Receiver waits for that read forever. Called after
    each broker call of a loop that must stop when cancelled.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Retrying:
    """Exponential pauses between attempts to reach a broker that went away."""

    def __init__(self, first: float = 0.1, most: float = 5.0) -> None:
        self.first, self.most, self.next = first, most, first

    async def pause(self) -> None:
        await asyncio.sleep(self.next)
        self.next = min(self.next * 2, self.most)

    def reset(self) -> None:
        self.next = self.first


# -- Redis Streams ---------------------------------------------------------------------------------

# Refresh (ARGV[3] = 0) or hand back (ARGV[3] = a long idle time) the given entries, but only those
# still pending for this consumer: another consumer may have claimed one meanwhile.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local kept = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    kept[#kept + 1] = ARGV[i]
  end
end
return kept
"""

# XREADGROUP's answer: per stream, its entries (id, fields).
_Streams = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

# Forget this consumer in the group if nothing is pending for it.
_FORGET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


class NudgeStreamBroker(RedisStreamBroker):
    """``RedisStreamBroker`` with a ``listen`` fit for competing workers.

    One entry per ``XREADGROUP`` (workers compete per nudge, nobody hoards); ``XAUTOCLAIM`` of entries
    idle longer than ``idle_timeout`` at least every ``claim_every`` seconds, busy or quiet; entries
    this consumer holds are refreshed while it works on them and handed back on ``shutdown``;
    acknowledging deletes the entry; a lost connection is retried, not raised. One ``Redis`` client
    for everything (upstream builds one per message: in redis-py 8 that is a third of a submit).
    """

    def __init__(self, url: str, *, stream: str, idle_timeout: float, connect_timeout: float) -> None:
        self.claim_every = min(1.0, idle_timeout / 2)
        super().__init__(
            url,
            queue_name=stream,
            consumer_group_name=GROUP,
            consumer_name=consumer_tag(),
            consumer_id="0",  # a group created after the first nudges still sees them
            mkstream=True,
            xread_block=max(1, int(self.claim_every * 1000)),
            maxlen=MAX_WAITING,
            approximate=True,
            idle_timeout=max(1, int(idle_timeout * 1000)),
            xread_count=1,
            socket_connect_timeout=connect_timeout,
        )
        self.client = Redis(connection_pool=self.connection_pool)
        self.keep_every = idle_timeout / 3
        self._held: set[bytes] = set()
        self._claim_cursor: bytes | str = "0-0"
        self._next_claim = 0.0
        self._keeper: asyncio.Task[None] | None = None

    async def kick(self, message: BrokerMessage) -> None:
        await self.client.xadd(
            self.queue_name, {b"data": message.message}, maxlen=self.maxlen, approximate=self.approximate
        )

    def _deliver(self, entry_id: bytes, data: bytes) -> AckableMessage:
        self._held.add(entry_id)
        return AckableMessage(data=data, ack=lambda: self._ack(entry_id))

    async def _ack(self, entry_id: bytes) -> None:
        self._held.discard(entry_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.queue_name, self.consumer_group_name, entry_id)
        pipe.xdel(self.queue_name, entry_id)
        await pipe.execute()

    async def _touch(self, entry_ids: list[bytes], idle_ms: int) -> set[bytes]:
        if not entry_ids:
            return set()
        kept = await self.client.eval(
            _TOUCH, 1, self.queue_name, self.consumer_group_name, self.consumer_name, idle_ms, *entry_ids
        )
        return set(kept)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.keep_every)
            held = list(self._held)
            try:
                kept = await self._touch(held, 0)
            except (RedisError, OSError) as exc:
                log.warning("work_queue.keepalive_failed", stream=self.queue_name, error=repr(exc))
                continue
            finally:
                _raise_if_cancelled()
            # Another consumer claimed these (this one was too slow to refresh them): not ours now.
            self._held.difference_update(set(held) - kept)

    async def _claim(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        cursor, claimed, *_ = await self.client.xautoclaim(
            self.queue_name,
            self.consumer_group_name,
            self.consumer_name,
            min_idle_time=self.idle_timeout,
            start_id=self._claim_cursor,
            count=10,
        )
        self._claim_cursor = cursor
        if cursor in (b"0-0", "0-0"):  # scanned the whole pending list: next round later
            self._next_claim = time.monotonic() + self.claim_every
        if claimed:
            log.info("work_queue.reclaimed", stream=self.queue_name, count=len(claimed))
        return list(claimed)

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep(), name=f"keepalive:{self.queue_name}")
        # Entries read (so pending for this consumer) and not yielded yet.
        ready: deque[tuple[bytes, dict[bytes, bytes]]] = deque()
        retrying = _Retrying()
        try:
            while True:
                try:
                    if not ready and time.monotonic() >= self._next_claim:
                        ready.extend(await self._claim())
                        _raise_if_cancelled()
                        continue
                    if not ready:
                        fetched = await self.client.xreadgroup(
                            self.consumer_group_name,
                            self.consumer_name,
                            {self.queue_name: ">"},
                            count=1,
                            block=self.block,
                        )
                        for _stream, entries in cast(_Streams, fetched or []):
                            ready.extend(entries)
                        _raise_if_cancelled()
                    retrying.reset()
                    while ready:
                        entry_id, fields = ready[0]
                        data = fields.get(b"data")
                        if data is None:  # not written by a producer of this queue
                            log.warning("work_queue.bad_entry", stream=self.queue_name, entry=entry_id)
                            await self._ack(entry_id)
                            ready.popleft()
                            continue
                        message = self._deliver(entry_id, data)
                        ready.popleft()
                        yield message
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    _raise_if_cancelled()
                    log.warning("work_queue.broker_unreachable", stream=self.queue_name, error=repr(exc))
                    await retrying.pause()
                except RedisError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    # The stream was deleted (or flushed) under us: declare it again.
                    log.warning("work_queue.group_missing", stream=self.queue_name)
                    with contextlib.suppress(RedisError, OSError):
                        await self._declare_consumer_group()
                    await retrying.pause()
        finally:
            # Read but never yielded: hand them back on shutdown with the rest.
            self._held.update(entry_id for entry_id, _fields in ready)

    async def shutdown(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        try:
            if self._held:
                # Idle "since long ago": the next XAUTOCLAIM of any other consumer takes them.
                handed = await self._touch(list(self._held), 10 * self.idle_timeout)
                log.info("work_queue.handed_back", stream=self.queue_name, count=len(handed))
                self._held.clear()
            await self.client.eval(_FORGET, 1, self.queue_name, self.consumer_group_name, self.consumer_name)
        except (RedisError, OSError) as exc:
            log.warning("work_queue.shutdown_incomplete", stream=self.queue_name, error=repr(exc))
        await super().shutdown()


class RedisStreams:
    errors: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

    def __init__(self, url: str, name: str, *, redeliver_after: float, connect_timeout: float) -> None:
        self.url = url
        self.name = name
        self.stream = f"trellis:work-queue:{name}"
        self.description = f"Redis stream {self.stream}"
        self.redeliver_after = redeliver_after
        self.connect_timeout = connect_timeout

    def _broker(self) -> NudgeStreamBroker:
        return NudgeStreamBroker(
            self.url, stream=self.stream, idle_timeout=self.redeliver_after, connect_timeout=self.connect_timeout
        )

    def producer(self) -> AsyncBroker:
        return self._broker()

    def consumer(self, concurrency: int) -> AsyncBroker:
        return self._broker()

    async def delete(self) -> None:
        async with Redis.from_url(self.url, socket_connect_timeout=self.connect_timeout) as conn:
            await conn.delete(self.stream)


# -- NATS JetStream --------------------------------------------------------------------------------


class NudgeJetStreamBroker(PullBasedJetStreamBroker):
    """``PullBasedJetStreamBroker`` that creates its consumer only when it consumes, fetches with an
    expiry, keeps the messages it works on alive and hands back unfinished ones on ``shutdown``."""

    def __init__(
        self,
        url: str,
        *,
        subject: str,
        stream: str,
        ack_wait: float,
        consumes: bool,
        connect_timeout: float,
    ) -> None:
        super().__init__(
            url,
            subject=subject,
            stream_name=stream,
            durable=GROUP,
            stream_config=StreamConfig(
                name=stream,
                subjects=[subject],
                retention=RetentionPolicy.WORK_QUEUE,  # an acknowledged nudge is gone
                storage=StorageType.FILE,
                max_msgs=MAX_WAITING,
            ),
            consumer_config=ConsumerConfig(
                durable_name=GROUP,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_ack_pending=-1,
            ),
            pull_consume_batch=1,
            pull_consume_timeout=5.0,
            connect_timeout=max(1, round(connect_timeout)),
            max_reconnect_attempts=-1,  # a worker outlives a NATS restart
            error_cb=self._on_error,
        )
        self.consumes = consumes
        self._first_connect = False
        self.keep_every = ack_wait / 3
        self._held: dict[int, NatsMsg] = {}
        self._keeper: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self._first_connect = True
        try:
            await super().startup()
        finally:
            self._first_connect = False

    async def _on_error(self, exc: Exception) -> None:
        if self._first_connect and not self.client.is_connected:
            # nats-py would retry the first connection for minutes; raising from its error callback
            # ends connect() with this error (later reconnects keep retrying: they do not come here).
            raise exc
        log.warning("work_queue.nats_error", stream=self.stream_name, error=repr(exc))

    async def _startup_consumer(self) -> None:
        if self.consumes:
            await super()._startup_consumer()

    async def kick(self, message: BrokerMessage) -> None:
        # While nats-py reconnects it buffers publishes and the JetStream ack never comes in time:
        # fail now rather than after the submit timeout.
        if not self.client.is_connected:
            raise nats.errors.ConnectionReconnectingError
        await super().kick(message)

    def _deliver(self, msg: NatsMsg) -> AckableMessage:
        key = id(msg)
        self._held[key] = msg

        async def ack() -> None:
            self._held.pop(key, None)
            await msg.ack()

        return AckableMessage(data=msg.data, ack=ack)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.keep_every)
            for msg in list(self._held.values()):
                try:
                    await msg.in_progress()
                except nats.errors.Error as exc:
                    log.warning("work_queue.keepalive_failed", stream=self.stream_name, error=repr(exc))
                _raise_if_cancelled()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep(), name=f"keepalive:{self.stream_name}")
        retrying = _Retrying()
        while True:
            try:
                fetched = await self.consumer.fetch(batch=1, timeout=self.pull_consume_timeout)
            except nats.errors.TimeoutError:
                _raise_if_cancelled()
                continue
            except nats.errors.Error as exc:
                _raise_if_cancelled()
                log.warning("work_queue.broker_unreachable", stream=self.stream_name, error=repr(exc))
                await retrying.pause()
                continue
            retrying.reset()
            for msg in fetched:
                yield self._deliver(msg)

    async def shutdown(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._held:
            log.info("work_queue.handed_back", stream=self.stream_name, count=len(self._held))
            for msg in self._held.values():
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak()
            self._held.clear()
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self.client.flush(timeout=1)
        await super().shutdown()


class NatsJetStream:
    errors: tuple[type[BaseException], ...] = (nats.errors.Error, OSError)

    def __init__(self, url: str, name: str, *, redeliver_after: float, connect_timeout: float) -> None:
        self.url = url
        self.name = name
        self.stream = f"trellis-work-queue-{name}"
        self.subject = f"trellis.work-queue.{name}"
        self.description = f"NATS JetStream stream {self.stream}"
        self.redeliver_after = redeliver_after
        self.connect_timeout = connect_timeout

    def _broker(self, *, consumes: bool) -> NudgeJetStreamBroker:
        return NudgeJetStreamBroker(
            self.url,
            subject=self.subject,
            stream=self.stream,
            ack_wait=self.redeliver_after,
            consumes=consumes,
            connect_timeout=self.connect_timeout,
        )

    def producer(self) -> AsyncBroker:
        return self._broker(consumes=False)

    def consumer(self, concurrency: int) -> AsyncBroker:
        return self._broker(consumes=True)

    async def delete(self) -> None:
        client = await nats.connect(
            self.url, connect_timeout=max(1, round(self.connect_timeout)), allow_reconnect=False
        )
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await client.jetstream().delete_stream(self.stream)
        finally:
            await client.close()


# -- RabbitMQ --------------------------------------------------------------------------------------

EXCHANGE = "trellis.work-queue"


class NudgeAioPikaBroker(AioPikaBroker):
    """``AioPikaBroker`` whose ``kick`` fails at once while its robust connection is reconnecting
    (instead of waiting for it, up to the submit timeout)."""

    async def kick(self, message: BrokerMessage) -> None:
        if self.write_conn is None or not self.write_conn.connected.is_set():
            raise ConnectionError("the RabbitMQ connection is down")
        await super().kick(message)


class RabbitMQ:
    errors: tuple[type[BaseException], ...] = (
        aiormq.exceptions.AMQPError,
        pamqp.exceptions.PAMQPException,
        ConnectionError,
        OSError,
    )

    def __init__(self, url: str, name: str, *, connect_timeout: float) -> None:
        self.url = url
        self.name = name
        self.queue = f"{EXCHANGE}.{name}"
        self.description = f"RabbitMQ queue {self.queue}"
        self.connect_timeout = connect_timeout
        # aio-pika's default is 5 s; a reconnect_interval in the URL wins.
        self.reconnect: dict[str, Any] = {} if "reconnect_interval=" in url else {"reconnect_interval": 1.0}

    def _broker(self, *, qos: int, consumes: bool) -> AioPikaBroker:
        broker = NudgeAioPikaBroker(
            self.url,
            qos=qos,
            exchange=Exchange(name=EXCHANGE, type=aio_pika.ExchangeType.DIRECT),
            task_queues=[Queue(name=self.queue, type=QueueType.QUORUM)],
            dead_letter_queue=Queue(name=f"{EXCHANGE}.dead-letter", type=QueueType.QUORUM),
            timeout=self.connect_timeout,
            **self.reconnect,
        )
        # Without it, startup opens no reading connection (see the module docstring).
        broker.is_worker_process = consumes
        return broker

    def producer(self) -> AsyncBroker:
        return self._broker(qos=1, consumes=False)

    def consumer(self, concurrency: int) -> AsyncBroker:
        return self._broker(qos=concurrency, consumes=True)

    async def delete(self) -> None:
        connection = await aio_pika.connect(self.url, timeout=self.connect_timeout)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(self.queue)
