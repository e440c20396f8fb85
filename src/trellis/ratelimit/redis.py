"""Redis GCRA limiter: one atomic Lua script that reads the Redis server's clock.

Using the server's ``TIME`` (not each replica's clock) means every API replica agrees on the
same buckets even when their clocks drift. A clock can still be injected for tests.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import RedisError

from trellis.kit.clock import Clock
from trellis.kit.errors import Unavailable
from trellis.kit.logging import get_logger
from trellis.ratelimit.base import MICROS, Decision, GcraParams, decide
from trellis.settings import RateRule

log = get_logger(__name__)

# KEYS[1]: bucket key. ARGV: emission interval (us), tolerance (us), now (us, or "" for server time).
# Returns {allowed (1/0), diff (us)}: see trellis.ratelimit.base.decide.
GCRA_LUA = """
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local now
-- The key's expiry only collects buckets that have fully refilled, so outliving that is harmless.
-- Redis expires keys in real time: with an injected clock (tests) real time is not the limiter's,
-- and a key could vanish mid-test on a slow machine; it is kept a minute longer then.
local slack_ms = 1
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
  slack_ms = 60000
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + emission
local diff = new_tat - now
if diff > tolerance then
  return {0, diff}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(diff / 1000) + slack_ms)
return {1, diff}
"""


class RedisRateLimiter:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "trellis:rl:",
        timeout_seconds: float = 0.25,
        fail_open: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._script = client.register_script(GCRA_LUA)
        self._prefix = prefix
        self._timeout = timeout_seconds
        self._fail_open = fail_open
        self._clock = clock

    async def acquire(self, key: str, rule: RateRule, *, policy: str) -> Decision:
        params = GcraParams.from_rule(rule)
        now = "" if self._clock is None else str(round(self._clock.monotonic() * MICROS))
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for creates a Task per call.
            async with asyncio.timeout(self._timeout):
                raw = await self._script(keys=[self._prefix + key], args=[params.emission_us, params.tolerance_us, now])
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("rate_limiter_unavailable", error=type(exc).__name__, fail_open=self._fail_open)
            if self._fail_open:
                return Decision(True, rule.capacity, rule.capacity, 0.0, 0.0, policy, rule.period_seconds)
            raise Unavailable(
                "Rate limiter unavailable", details={"component": "redis"}, headers={"Retry-After": "1"}
            ) from exc
        allowed, diff = int(raw[0]), int(raw[1])
        return decide(allowed=bool(allowed), diff_us=diff, params=params, rule=rule, policy=policy)

    async def close(self) -> None:
        # The client belongs to the runtime, which closes it.
        return None
