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
* ``NoAuthEpoch`` — PostgreSQL without Redis has no shared cheap signal, so nothing is cached.

When the epoch cannot be read (Redis down), the cache is bypassed rather than trusted. A TTL
bounds the age of any entry regardless. Written by hand because the rule that makes it safe (the
epoch tag) is the whole point and no cache library has it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger

log = get_logger(__name__)

ValueT = TypeVar("ValueT")


class AuthEpoch(Protocol):
    async def current(self) -> str | None:
        """The current epoch, or None when it cannot be known (then nothing cached is trusted)."""
        ...

    async def bump(self) -> None:
        """Move the epoch. Call after the change that takes access away has committed."""
        ...


class NoAuthEpoch:
    async def current(self) -> str | None:
        return None

    async def bump(self) -> None:
        return None


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


@dataclass(slots=True)
class _Entry(Generic[ValueT]):
    value: ValueT
    epoch: str
    loaded_at: float


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

    def clear(self) -> None:
        self._entries.clear()
