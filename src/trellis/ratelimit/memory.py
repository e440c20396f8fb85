"""In-process GCRA limiter: exact within one process, no I/O, nothing to configure."""

from __future__ import annotations

from trellis.kit.clock import Clock, SystemClock
from trellis.ratelimit.base import MICROS, Decision, GcraParams, decide
from trellis.settings import RateRule

# Sweep buckets that have fully refilled once the table grows past this many keys.
_SWEEP_THRESHOLD = 10_000


class MemoryRateLimiter:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._tats: dict[str, int] = {}

    async def acquire(self, key: str, rule: RateRule, *, policy: str) -> Decision:
        # No await between read and write: atomic on the event loop.
        now = round(self._clock.monotonic() * MICROS)
        params = GcraParams.from_rule(rule)
        tat = max(self._tats.get(key, now), now)
        new_tat = tat + params.emission_us
        diff = new_tat - now
        if diff > params.tolerance_us:
            return decide(allowed=False, diff_us=diff, params=params, rule=rule, policy=policy)
        self._tats[key] = new_tat
        if len(self._tats) > _SWEEP_THRESHOLD:
            self._sweep(now)
        return decide(allowed=True, diff_us=diff, params=params, rule=rule, policy=policy)

    def _sweep(self, now: int) -> None:
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    async def close(self) -> None:
        self._tats.clear()
