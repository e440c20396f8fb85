"""The rate-limiter contract and the GCRA arithmetic both backends share.

GCRA (the generic cell rate algorithm) is a token bucket kept as one number per key: the
"theoretical arrival time" (TAT). A bucket of ``capacity`` requests per ``period`` has an emission
interval ``T = period / capacity``; a request is allowed when ``max(TAT, now) + T - now`` does not
exceed ``capacity * T``. All arithmetic is in integer microseconds, so both backends agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from trellis.kit.errors import RateLimited
from trellis.settings import RateRule

MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    # Seconds until the next request would be allowed (0 when allowed).
    retry_after: float
    # Seconds until the bucket is full again.
    reset_after: float
    policy: str
    window_seconds: float

    def headers(self) -> dict[str, str]:
        """draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy`` and ``RateLimit``."""
        name = f'"{self.policy}"'
        headers = {
            "RateLimit-Policy": f"{name};q={self.limit};w={math.ceil(self.window_seconds)}",
            "RateLimit": f"{name};r={self.remaining};t={math.ceil(self.reset_after)}",
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


@dataclass(frozen=True, slots=True)
class GcraParams:
    emission_us: int
    tolerance_us: int

    @classmethod
    def from_rule(cls, rule: RateRule) -> GcraParams:
        emission = max(1, int(rule.period_seconds * MICROS) // rule.capacity)
        return cls(emission_us=emission, tolerance_us=emission * rule.capacity)


def decide(*, allowed: bool, diff_us: int, params: GcraParams, rule: RateRule, policy: str) -> Decision:
    """Turn the raw GCRA outcome into a Decision.

    ``diff_us`` is, when allowed, ``new_tat - now``; when refused, ``tat + T - now``.
    """
    if allowed:
        remaining = (params.tolerance_us - diff_us) // params.emission_us
        return Decision(True, rule.capacity, remaining, 0.0, diff_us / MICROS, policy, rule.period_seconds)
    retry_us = diff_us - params.tolerance_us
    reset_us = diff_us - params.emission_us
    return Decision(False, rule.capacity, 0, retry_us / MICROS, reset_us / MICROS, policy, rule.period_seconds)


class RateLimiter(Protocol):
    """Take one request from the bucket ``key``; the rule says how big the bucket is."""

    async def acquire(self, key: str, rule: RateRule, *, policy: str) -> Decision: ...

    async def close(self) -> None: ...


async def take_or_refuse(limiter: RateLimiter, key: str, rule: RateRule, policy: str) -> Decision:
    """One request from the bucket, or ``RateLimited`` (429, with the headers) when it is empty:
    what every door does before serving a request."""
    decision = await limiter.acquire(key, rule, policy=policy)
    if not decision.allowed:
        raise RateLimited(
            details={"policy": policy, "limit": decision.limit, "retry_after_seconds": round(decision.retry_after, 3)},
            headers=decision.headers(),
        )
    return decision
