"""A credential cache that never outlives a revocation.

Authenticating from the database costs a few hundred microseconds per request (most of it thread
hops in the async driver). So credentials are cached in-process, each entry tagged with the
*auth epoch* read just before the database lookup. Every change that can take access away
(revoking a key, disabling a user) commits to the database and then moves the epoch; an entry
whose tag differs from the current epoch is not used. The epoch lives where every process that
shares the database can read it cheaply:

* ``RedisAuthEpoch`` — an ``INCR`` counter in Redis (replicas on several hosts);
* ``FileAuthEpoch`` — a random token in a file beside the SQLite database (the server, its
  workers and the CLI on one machine);
* ``PostgresAuthEpoch`` — PostgreSQL without Redis: ``LISTEN``/``NOTIFY`` on one dedicated
  connection per process; the epoch is a local token that changes on every notification, and is
  unknown while that connection is down;
* ``NoAuthEpoch`` — nothing shared (an in-memory SQLite database), so nothing is cached.

When the epoch cannot be read (Redis down), the cache is bypassed rather than trusted. A TTL
bounds the age of any entry regardless. Written by hand because the rule that makes it safe (the
epoch tag) is the whole point and no cache library has it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger
from trellis.storage.database import Database
from trellis.storage.listen import PostgresListener

log = get_logger(__name__)

ValueT = TypeVar("ValueT")


class AuthEpoch(Protocol):
    async def current(self) -> str | None:
        """The current epoch, or None when it cannot be known (then nothing cached is trusted)."""
        ...

    async def bump(self) -> None:
        """Move the epoch. Call after the change that takes access away has committed."""
        ...

    async def aclose(self) -> None:
        """Release what the epoch holds open (a listening connection)."""
        ...


class NoAuthEpoch:
    async def current(self) -> str | None:
        return None

    async def bump(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class PostgresAuthEpoch:
    """The epoch on PostgreSQL alone, pushed by ``NOTIFY`` instead of read per request.

    Each process listens on ``channel`` on a connection of its own (asyncpg delivers notifications
    as they arrive, on an idle connection). The epoch is a random token made when listening starts
    and replaced on every notification; ``bump`` sends one (``pg_notify`` in a committed
    transaction, so it reaches every listener, this process's own included) and replaces the local
    token at once. While the listening connection is down the epoch is unknown (None: nothing
    cached is trusted) and a new token is made when listening starts again, so nothing cached
    before a gap is trusted after it. Reconnecting is tried at most every ``retry_seconds``. As
    with Redis, a request served between a revocation's commit and the notification's arrival
    (milliseconds) may still pass; the cache TTL bounds every entry in any case.
    """

    def __init__(
        self,
        database: Database,
        dsn: str,
        clock: Clock,
        *,
        channel: str = "trellis_auth_epoch",
        retry_seconds: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._database = database
        self._channel = channel
        self._token: str | None = None
        self._listener = PostgresListener(
            dsn,
            channel,
            self._on_notification,
            clock,
            on_listening=self._new_token,
            on_lost=self._forget_token,
            retry_seconds=retry_seconds,
            connect_timeout=connect_timeout,
        )
        # Set on every notification: lets a test wait for one instead of sleeping.
        self.notified = asyncio.Event()

    async def current(self) -> str | None:
        if not self._listener.listening:
            self._token = None
            await self._listener.ensure()
        return self._token

    def _new_token(self) -> None:
        self._token = secrets.token_hex(16)

    def _forget_token(self) -> None:
        self._token = None

    def _on_notification(self, _payload: str) -> None:
        if self._listener.listening:
            self._new_token()
        self.notified.set()

    async def bump(self) -> None:
        if self._token is not None:
            self._token = secrets.token_hex(16)
        try:
            async with self._database.transaction() as session:
                await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self._channel})
        except (OSError, SQLAlchemyError) as exc:
            # Other processes keep their entries at most the cache TTL. Say so loudly.
            log.error("auth_epoch_bump_failed", error=type(exc).__name__)

    async def aclose(self) -> None:
        self._token = None
        await self._listener.aclose()


class FileAuthEpoch:
    def __init__(self, path: Path) -> None:
        self._path = path

    async def current(self) -> str | None:
        # A tiny local read (microseconds); no thread hop needed.
        try:
            return self._path.read_text()
        except FileNotFoundError:
            return ""
        except OSError:
            return None

    async def bump(self) -> None:
        # A random token, not a counter: two processes bumping at once must never write the same
        # value a reader already saw. os.replace makes the switch atomic for readers.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_name(f"{self._path.name}.{secrets.token_hex(4)}.tmp")
        temporary.write_text(secrets.token_hex(16))
        os.replace(temporary, self._path)

    async def aclose(self) -> None:
        return None


class RedisAuthEpoch:
    def __init__(self, client: Redis, key: str) -> None:
        self._client = client
        self._key = key

    async def current(self) -> str | None:
        try:
            value = await self._client.get(self._key)
        except (RedisError, OSError, TimeoutError):
            return None
        return "" if value is None else str(int(value))

    async def bump(self) -> None:
        try:
            await self._client.incr(self._key)
        except (RedisError, OSError, TimeoutError) as exc:
            # Readers that cannot reach Redis bypass the cache; readers that can will keep an
            # entry at most the cache TTL. Say so loudly.
            log.error("auth_epoch_bump_failed", error=type(exc).__name__)

    async def aclose(self) -> None:
        return None  # the client belongs to the runtime


@dataclass(slots=True)
class _Entry(Generic[ValueT]):
    value: ValueT
    epoch: str
    loaded_at: float


class SingleFlight(Generic[ValueT]):
    """Concurrent loads of one key share one call: a thousand sockets opening (or re-checking) with
    one credential at once make one database read, not a thousand that exhaust the pool."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[ValueT]] = {}

    async def load(self, key: str, load: Callable[[], Awaitable[ValueT]]) -> ValueT:
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[ValueT] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.add_done_callback(_retrieved)
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._inflight[key]


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class EpochCache(Generic[ValueT]):
    """A bounded map whose entries are valid only for the epoch they were loaded under."""

    def __init__(self, clock: Clock, *, ttl_seconds: float = 60.0, max_entries: int = 10_000) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, _Entry[ValueT]] = {}

    def get(self, key: str, epoch: str) -> ValueT | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.epoch != epoch or self._clock.monotonic() - entry.loaded_at > self._ttl:
            del self._entries[key]
            return None
        return entry.value

    def put(self, key: str, value: ValueT, epoch: str) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = _Entry(value, epoch, self._clock.monotonic())

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
