"""Long-lived connections (``/ws``, GraphQL subscriptions) learn here that access may have been taken
away, so a revoked key or a disabled user is cut off within seconds, not at the next request.

One task per process reads the auth epoch (see ``trellis.auth.cache``) every ``interval`` seconds,
and this process's own changes too; when either moved (or the epoch cannot be read), it moves
``generation``. A connection waits for the generation to move (or for its own timeout, to check
its credential's expiry), and then asks ``AuthService.revalidate``: one cached read, or a database
read only after access did change. The reader starts with the first waiting connection.
"""

from __future__ import annotations

import asyncio
import contextlib

from trellis.auth.service import AuthService
from trellis.kit.logging import get_logger

log = get_logger(__name__)


class AccessWatch:
    def __init__(self, auth: AuthService, *, interval_seconds: float = 1.0) -> None:
        self._auth = auth
        self._interval = interval_seconds
        self.generation = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def wait(self, seen: int, seconds: float) -> int:
        """Wait until the generation differs from ``seen`` or ``seconds`` passed; the generation then."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read(), name="access-watch")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds), self._changed:
                await self._changed.wait_for(lambda: self.generation != seen)
        return self.generation

    async def _read(self) -> None:
        last: tuple[str | None, int] | None = None
        while True:
            try:
                epoch = await self._auth.epoch.current()
            except Exception as exc:  # noqa: BLE001 - unknown epoch: everyone checks again
                log.warning("access_watch_epoch_failed", error=type(exc).__name__)
                epoch = None
            seen = (epoch, self._auth.changes)
            if last is not None and (epoch is None or seen != last):
                async with self._changed:
                    self.generation += 1
                    self._changed.notify_all()
            last = seen
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
