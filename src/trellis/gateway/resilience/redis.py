"""Redis circuit breaker: state shared by every replica, each transition one atomic Lua script.

The script runs the same steps as :mod:`trellis.gateway.resilience.base` and reads the Redis
server's ``TIME`` (not each replica's clock), so replicas agree on when the recovery period ends
even when their clocks drift; a clock can still be injected for tests. Keys expire once idle.

A breaker must never take the gateway down: when Redis is unreachable or slow, calls are allowed
(and their outcomes dropped) with a warning.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from trellis.gateway.resilience.base import (
    MICROS,
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    Permit,
    outcome_target,
)
from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger

log = get_logger(__name__)

_STATES = (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)

# KEYS[1]: the endpoint's hash {f: consecutive failures, o: open until (us, 0 = closed),
# p: probe lease until (us), g: generation}.
# ARGV: op, failure threshold, recovery (us), probe lease (us), key TTL (ms), permit generation
# (or "" for a bare key),
# now (us, or "" for the server's time).
# acquire -> {allowed, state (0 closed, 1 open, 2 half-open), probe, generation, retry after (us)}
# status  -> {state, failures, retry after (us), probe in flight}
# success / failure / release -> 1 when the state changed, else 0
BREAKER_LUA = """
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local recovery = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local now
if ARGV[7] ~= '' then
  now = tonumber(ARGV[7])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local h = redis.call('HMGET', KEYS[1], 'f', 'o', 'p', 'g')
local f = tonumber(h[1]) or 0
local o = tonumber(h[2]) or 0
local p = tonumber(h[3]) or 0
local g = tonumber(h[4]) or 0

local s
if o == 0 then s = 0 elseif now < o then s = 1 else s = 2 end

local function save()
  redis.call('HSET', KEYS[1], 'f', string.format('%d', f), 'o', string.format('%d', o),
    'p', string.format('%d', p), 'g', string.format('%d', g))
  redis.call('PEXPIRE', KEYS[1], ttl)
end

if op == 'acquire' then
  if s == 0 then return {1, 0, 0, g, 0} end
  if s == 1 then return {0, 1, 0, g, o - now} end
  if p > now then return {0, 2, 0, g, p - now} end
  g = g + 1
  p = now + lease
  save()
  return {1, 2, 1, g, 0}
end
if op == 'status' then
  if s == 1 then return {1, f, o - now, 0} end
  if s == 2 and p > now then return {2, f, p - now, 1} end
  return {s, f, 0, 0}
end

-- A permit's outcome counts only in its own generation; '' (a bare key) in any.
if ARGV[6] ~= '' and tonumber(ARGV[6]) ~= g then return 0 end
if op == 'success' then
  if s == 0 then
    if f == 0 then return 0 end
    f = 0
  elseif s == 2 then
    f = 0
    o = 0
    p = 0
    g = g + 1
  else
    return 0
  end
elseif op == 'failure' then
  if s == 1 then return 0 end
  if s == 0 then f = f + 1 end
  if s == 2 or f >= threshold then
    o = now + recovery
    p = 0
    g = g + 1
  end
elseif op == 'release' then
  if s ~= 2 or p == 0 then return 0 end
  p = 0
else
  return redis.error_reply('unknown breaker op ' .. op)
end
save()
return 1
"""


class RedisCircuitBreaker:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "trellis:cb:",
        failure_threshold: int = 5,
        recovery_seconds: float = 30.0,
        probe_lease_seconds: float = 30.0,
        idle_ttl_seconds: float = 3600.0,
        timeout_seconds: float = 0.25,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._script = client.register_script(BREAKER_LUA)
        self._prefix = prefix
        self._config = BreakerConfig(failure_threshold, recovery_seconds, probe_lease_seconds)
        # Idle keys go away, but never while open or while a probe may still report.
        self._ttl_ms = math.ceil((recovery_seconds + probe_lease_seconds + idle_ttl_seconds) * 1000)
        self._timeout = timeout_seconds
        self._clock = clock

    @property
    def config(self) -> BreakerConfig:
        return self._config

    async def _run(self, op: str, key: str, generation: int | str = "") -> Any:
        now = "" if self._clock is None else str(round(self._clock.monotonic() * MICROS))
        c = self._config
        args: list[str | int] = [op, c.failure_threshold, c.recovery_us, c.lease_us, self._ttl_ms, generation, now]
        # asyncio.timeout, not wait_for: on 3.11 wait_for creates a Task per call.
        async with asyncio.timeout(self._timeout):
            return await self._script(keys=[self._prefix + key], args=args)

    async def acquire(self, key: str) -> Permit:
        try:
            raw = await self._run("acquire", key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("circuit_breaker_unavailable", endpoint=key, op="acquire", error=type(exc).__name__)
            return Permit(key, True, BreakerState.CLOSED)
        allowed, state, probe, generation, retry_us = (int(v) for v in raw)
        return Permit(key, bool(allowed), _STATES[state], bool(probe), retry_us / MICROS, generation)

    async def _record(self, op: str, outcome_of: Permit | str) -> None:
        target = outcome_target(outcome_of)
        if target is None:
            return
        key, generation = target
        try:
            await self._run(op, key, "" if generation is None else generation)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("circuit_breaker_unavailable", endpoint=key, op=op, error=type(exc).__name__)

    async def record_success(self, outcome_of: Permit | str) -> None:
        await self._record("success", outcome_of)

    async def record_failure(self, outcome_of: Permit | str) -> None:
        await self._record("failure", outcome_of)

    async def release(self, outcome_of: Permit | str) -> None:
        await self._record("release", outcome_of)

    async def status(self, key: str) -> BreakerStatus:
        try:
            raw = await self._run("status", key)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("circuit_breaker_unavailable", endpoint=key, op="status", error=type(exc).__name__)
            return BreakerStatus(BreakerState.CLOSED, 0, 0.0, False)
        state, failures, retry_us, probe = (int(v) for v in raw)
        return BreakerStatus(_STATES[state], failures, retry_us / MICROS, bool(probe))

    async def state(self, key: str) -> BreakerState:
        return (await self.status(key)).state

    async def retry_after(self, key: str) -> float:
        return (await self.status(key)).retry_after

    async def close(self) -> None:
        # The client belongs to the runtime, which closes it.
        return None
