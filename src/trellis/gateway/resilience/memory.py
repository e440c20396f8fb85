"""In-process circuit breaker: exact within one process, no I/O. Each replica trips on its own."""

from __future__ import annotations

from dataclasses import replace

from trellis.gateway.resilience import base
from trellis.gateway.resilience.base import (
    MICROS,
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    Entry,
    Permit,
    outcome_target,
)
from trellis.kit.clock import Clock, SystemClock


class MemoryCircuitBreaker:
    def __init__(
        self,
        clock: Clock | None = None,
        *,
        failure_threshold: int = 5,
        recovery_seconds: float = 30.0,
        probe_lease_seconds: float = 30.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self._config = BreakerConfig(failure_threshold, recovery_seconds, probe_lease_seconds)
        # One entry per endpoint: a handful of keys, never swept.
        self._entries: dict[str, Entry] = {}

    @property
    def config(self) -> BreakerConfig:
        return self._config

    def _now(self) -> int:
        return round(self._clock.monotonic() * MICROS)

    def _entry(self, key: str) -> Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Entry()
        return entry

    # No await between read and write in any method: each transition is atomic on the event loop.

    async def acquire(self, key: str) -> Permit:
        _, permit = base.acquire(self._entry(key), self._now(), self._config)
        return replace(permit, key=key)

    async def record_success(self, outcome_of: Permit | str) -> None:
        target = outcome_target(outcome_of)
        if target is not None:
            base.record_success(self._entry(target[0]), self._now(), target[1])

    async def record_failure(self, outcome_of: Permit | str) -> None:
        target = outcome_target(outcome_of)
        if target is not None:
            base.record_failure(self._entry(target[0]), self._now(), target[1], self._config)

    async def release(self, outcome_of: Permit | str) -> None:
        target = outcome_target(outcome_of)
        if target is not None:
            base.release(self._entry(target[0]), self._now(), target[1])

    async def status(self, key: str) -> BreakerStatus:
        return base.status(self._entries.get(key) or Entry(), self._now())

    async def state(self, key: str) -> BreakerState:
        return (await self.status(key)).state

    async def retry_after(self, key: str) -> float:
        return (await self.status(key)).retry_after

    async def close(self) -> None:
        self._entries.clear()
