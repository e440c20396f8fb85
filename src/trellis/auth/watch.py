"""Long-lived connections (``/ws``, GraphQL subscriptions) learn here that access may have been taken
away, so a revoked key or a disabled user is cut off within seconds, not at the next request.

One task per process reads the auth epoch (see ``trellis.auth.cache``) every ``interval`` seconds,
and this process's own changes too; when either moved (or, every ``UNKNOWN_EVERY`` ticks, while
the epoch cannot be read), it moves ``generation`` and wakes every waiting connection, which then
asks ``AuthService.revalidate`` (one cached read, or a database read only after access did change;
connections sharing a credential share that read). A connection whose credential
expires is also woken once the clock passes its expiry (checked at each tick). Nothing else wakes
a connection: a thousand idle sockets cost one epoch read per interval, not a thousand.
The reader starts with the first waiting connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime

from trellis.auth.service import AuthService
from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger

log = get_logger(__name__)
# While the epoch cannot be read (Redis away), everyone re-checks every this many ticks: a revocation
# is still noticed, without every connection reading the database every second.
UNKNOWN_EVERY = 10


@dataclass(eq=False)
class _Waiter:
    expires_at: datetime | None
    woken: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


class AccessWatch:
    def __init__(self, auth: AuthService, clock: Clock, *, interval_seconds: float = 1.0) -> None:
        self._auth = auth
        self._clock = clock
        self._interval = interval_seconds
        self.generation = 0
        self._waiters: set[_Waiter] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def wait(self, seen: int, expires_at: datetime | None = None) -> int:
        """Wait until the generation differs from ``seen`` or the clock passed ``expires_at``;
        returns the generation then (after ``aclose``: never)."""
        if self._closed:
            await asyncio.Event().wait()  # shutting down: the connection is being closed anyway
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read(), name="access-watch")
        if self.generation != seen or (expires_at is not None and expires_at <= self._clock.now()):
            return self.generation
        waiter = _Waiter(expires_at)
        self._waiters.add(waiter)
        try:
            await waiter.woken
        finally:
            self._waiters.discard(waiter)
        return self.generation

    async def _read(self) -> None:
        last: tuple[str | None, int] | None = None
        ticks = 0
        while True:
            ticks += 1
            try:
                epoch = await self._auth.epoch.current()
            except Exception as exc:  # noqa: BLE001 - unknown epoch: everyone checks again
                log.warning("access_watch_epoch_failed", error=type(exc).__name__)
                epoch = None
            seen = (epoch, self._auth.changes)
            unknown_due = epoch is None and ticks % UNKNOWN_EVERY == 0
            if last is not None and (unknown_due or (epoch is not None and seen != last)):
                self.generation += 1
                for waiter in self._waiters:
                    waiter.wake()
            else:
                now = self._clock.now()
                for waiter in self._waiters:
                    if waiter.expires_at is not None and waiter.expires_at <= now:
                        waiter.wake()
            last = seen
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiter in self._waiters:
            waiter.wake()
