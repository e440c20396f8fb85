"""One PostgreSQL ``LISTEN`` on a connection of its own, reconnected on demand with a throttle; and
that connection's mechanics (``DedicatedConnection``) for whatever else needs a session that lives as
long as the process (a worker's liveness lock, ``workflows.liveness``).

Several parts of Trellis turn a committed change into a push to every process (``NOTIFY`` in the
transaction, so the signal is delivered if and only if the change committed): the credential
cache's epoch (``auth.cache.PostgresAuthEpoch``) and the end of a workflow run
(``workflows.ended.RunEndListener``). Each needs the same thing underneath: a dedicated asyncpg
connection (asyncpg delivers notifications as they arrive, on an idle connection), told when it is
lost, re-opened at most every ``retry_seconds`` by whoever next asks. Hand-written because it is a
few lines over asyncpg's ``add_listener``; no library packages PostgreSQL notifications for asyncio
with reconnection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger

log = get_logger(__name__)


class DedicatedConnection:
    """An asyncpg connection of one's own, opened on demand (at most every ``retry_seconds``) and
    prepared by ``on_open(connection)``, which returns False to give it up (it is then closed).
    ``on_lost`` is called when an open connection goes away; ``alive`` says whether it is open."""

    def __init__(
        self,
        dsn: str,
        clock: Clock,
        on_open: Callable[[Any], Awaitable[bool]],
        *,
        purpose: str,
        on_lost: Callable[[], None] | None = None,
        retry_seconds: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._clock = clock
        self._on_open = on_open
        self._purpose = purpose
        self._on_lost = on_lost
        self._retry_seconds = retry_seconds
        self._connect_timeout = connect_timeout
        self._connection: Any = None  # an asyncpg.Connection (asyncpg is untyped)
        self._next_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def alive(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def ensure(self) -> bool:
        """Open and prepare the connection if it is not open (any more); True when it is."""
        if self.alive:
            return True
        async with self._lock:
            if self.alive or self._closed or self._clock.monotonic() < self._next_attempt:
                return self.alive
            self._next_attempt = self._clock.monotonic() + self._retry_seconds
            import asyncpg  # type: ignore[import-untyped]  # only PostgreSQL deployments load it

            try:
                connection = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("storage.connection_failed", purpose=self._purpose, error=type(exc).__name__)
                return False
            try:
                ready = await self._on_open(connection)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("storage.connection_failed", purpose=self._purpose, error=type(exc).__name__)
                ready = False
            if not ready:
                await connection.close()
                return False
            connection.add_termination_listener(self._on_terminated)
            self._connection = connection
            return True

    def _on_terminated(self, *_: object) -> None:
        self._connection = None
        if self._on_lost is not None:
            self._on_lost()

    async def aclose(self) -> None:
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close()


class PostgresListener:
    """Listens on ``channel`` and calls ``on_payload(payload)`` for each notification.

    ``on_listening`` is called each time listening (re)starts and ``on_lost`` when the connection
    goes away, so an owner can stop trusting what it derived from notifications it may have missed.
    ``listening`` says whether notifications will arrive right now.
    """

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_payload: Callable[[str], None],
        clock: Clock,
        *,
        on_listening: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        retry_seconds: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._channel = channel
        self._on_payload = on_payload
        self._on_listening = on_listening
        self._connection = DedicatedConnection(
            dsn,
            clock,
            self._listen,
            purpose=f"listen {channel}",
            on_lost=on_lost,
            retry_seconds=retry_seconds,
            connect_timeout=connect_timeout,
        )

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def listening(self) -> bool:
        return self._connection.alive

    async def ensure(self) -> bool:
        """Listen if not listening yet (or any more); True when notifications will arrive."""
        return await self._connection.ensure()

    async def _listen(self, connection: Any) -> bool:
        await connection.add_listener(self._channel, self._on_notification)
        if self._on_listening is not None:
            self._on_listening()
        return True

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_payload(payload)

    async def aclose(self) -> None:
        await self._connection.aclose()
