"""The circuit-breaker contract and the state machine both backends share.

One breaker per provider endpoint (a string key such as ``"openai:http://host:8000/v1"``)::

    closed ──(failure_threshold consecutive failures)──▶ open
    open ──(recovery_seconds elapse)──▶ half_open
    half_open: exactly one probe call at a time (it holds a lease of probe_lease_seconds)
        probe success ──▶ closed (failure count reset)
        probe failure ──▶ open for another full recovery period

Callers take a :class:`Permit` with ``acquire`` and report its outcome with ``record_success`` /
``record_failure`` (or ``release`` when the call ended without a verdict, e.g. the client went away);
a bare key is accepted too, trading away the protection against late outcomes described next.
A permit carries the breaker's *generation*, bumped on every trip, close and probe grant, so an
outcome that arrives late (a call let through before the breaker tripped, a probe whose lease expired
and was handed to another probe) cannot undo a newer decision: only outcomes of the current
generation count. All times are integer microseconds, so both backends agree exactly.

State is stored as four numbers, and ``half_open`` is never written: it is ``open`` whose recovery
time has passed. A probe lease that expires frees the slot by itself, so a crashed probe cannot
wedge the breaker.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from trellis.gateway.errors import ProviderError, ProviderRejected, ProviderUnavailable

T = TypeVar("T")

MICROS = 1_000_000


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    recovery_seconds: float = 30.0
    # How long a half-open probe may hold the only slot before another probe is let through.
    probe_lease_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.recovery_seconds <= 0 or self.probe_lease_seconds <= 0:
            raise ValueError("recovery_seconds and probe_lease_seconds must be positive")

    @property
    def recovery_us(self) -> int:
        return max(1, round(self.recovery_seconds * MICROS))

    @property
    def lease_us(self) -> int:
        return max(1, round(self.probe_lease_seconds * MICROS))


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer to "may this call go through?", and the receipt to report its outcome with."""

    key: str
    allowed: bool
    # The state the decision was taken in.
    state: BreakerState
    # True for the single half-open probe: its outcome closes or re-opens the breaker.
    probe: bool = False
    # Seconds until a call may be allowed again (0 when allowed). Open: until half-open; half-open
    # with a probe in flight: until that probe's lease expires (at the latest).
    retry_after: float = 0.0
    # The breaker generation the permit belongs to; -1 when the breaker could not be consulted.
    generation: int = -1

    def __bool__(self) -> bool:
        """``if not await breaker.acquire(key):`` reads as it should."""
        return self.allowed

    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds, rounded up, never 0."""
        return str(max(1, math.ceil(self.retry_after)))


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    state: BreakerState
    # Consecutive failures counted while closed (kept as they were when it opened).
    failures: int
    retry_after: float
    probe_in_flight: bool


@dataclass(slots=True)
class Entry:
    """One endpoint's stored state. ``open_until == 0`` means closed."""

    failures: int = 0
    open_until: int = 0
    probe_until: int = 0
    generation: int = 0

    def state(self, now: int) -> BreakerState:
        if self.open_until == 0:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self.open_until else BreakerState.HALF_OPEN


# The transitions, in Python. trellis.gateway.resilience.redis runs the same steps in Lua; the
# shared contract tests hold the two to the same results. Each returns True when it changed ``entry``.


def acquire(entry: Entry, now: int, config: BreakerConfig) -> tuple[bool, Permit]:
    """Returns (changed, permit) with ``permit.key`` empty; the caller fills it in."""
    state = entry.state(now)
    if state is BreakerState.CLOSED:
        return False, Permit("", True, state, generation=entry.generation)
    # Refused while open, and in half-open while another probe holds the slot.
    busy_until = entry.open_until if state is BreakerState.OPEN else entry.probe_until
    if busy_until > now:
        return False, Permit("", False, state, retry_after=(busy_until - now) / MICROS, generation=entry.generation)
    entry.generation += 1
    entry.probe_until = now + config.lease_us
    return True, Permit("", True, state, probe=True, generation=entry.generation)


def record_success(entry: Entry, now: int, generation: int | None) -> bool:
    if generation is not None and generation != entry.generation:
        return False  # a late outcome: the breaker has moved on since the permit was given
    state = entry.state(now)
    if state is BreakerState.CLOSED:
        if entry.failures == 0:
            return False
        entry.failures = 0
        return True
    if state is BreakerState.HALF_OPEN:
        # Only the current probe holds the current generation in half-open (or the caller gave
        # just the key and takes its success as the probe's).
        entry.failures = 0
        entry.open_until = 0
        entry.probe_until = 0
        entry.generation += 1
        return True
    return False


def record_failure(entry: Entry, now: int, generation: int | None, config: BreakerConfig) -> bool:
    if generation is not None and generation != entry.generation:
        return False
    state = entry.state(now)
    if state is BreakerState.CLOSED:
        entry.failures += 1
        if entry.failures >= config.failure_threshold:
            _trip(entry, now, config)
        return True
    if state is BreakerState.HALF_OPEN:
        _trip(entry, now, config)
        return True
    return False


def release(entry: Entry, now: int, generation: int | None) -> bool:
    """The probe ended without a verdict: free the slot at once instead of waiting for the lease."""
    if generation is not None and generation != entry.generation:
        return False
    if entry.state(now) is not BreakerState.HALF_OPEN or entry.probe_until == 0:
        return False
    entry.probe_until = 0
    return True


def outcome_target(outcome_of: Permit | str) -> tuple[str, int | None] | None:
    """(key, generation to match or None for any) for an outcome report; None: nothing to report.

    A refused permit let no call through, and a degraded one (generation -1) was never counted.
    """
    if isinstance(outcome_of, str):
        return outcome_of, None
    if not outcome_of.allowed or outcome_of.generation < 0:
        return None
    return outcome_of.key, outcome_of.generation


def _trip(entry: Entry, now: int, config: BreakerConfig) -> None:
    entry.open_until = now + config.recovery_us
    entry.probe_until = 0
    entry.generation += 1


def status(entry: Entry, now: int) -> BreakerStatus:
    state = entry.state(now)
    probe = state is BreakerState.HALF_OPEN and entry.probe_until > now
    if state is BreakerState.OPEN:
        retry_us = entry.open_until - now
    elif probe:
        retry_us = entry.probe_until - now
    else:
        retry_us = 0
    return BreakerStatus(state, entry.failures, retry_us / MICROS, probe)


class CircuitBreaker(Protocol):
    """A circuit breaker per endpoint key. Implementations: memory (one process), Redis (shared)."""

    async def acquire(self, key: str) -> Permit:
        """May a call to ``key`` go through now? In half-open, only one caller at a time gets ``True``."""
        ...

    async def record_success(self, outcome_of: Permit | str) -> None:
        """The call let through by this permit succeeded (the endpoint is healthy).

        Given a permit, a late outcome (the breaker has tripped, closed or handed the probe slot to
        someone else since) is ignored. Given only the key, the outcome is taken as the current
        generation's: in half-open it decides as if it were the probe's.
        """
        ...

    async def record_failure(self, outcome_of: Permit | str) -> None:
        """The call failed in a way that says the endpoint is unhealthy. See ``record_success``."""
        ...

    async def release(self, outcome_of: Permit | str) -> None:
        """The call ended without a verdict (cancelled, client gone): a probe frees its slot."""
        ...

    async def status(self, key: str) -> BreakerStatus: ...

    async def state(self, key: str) -> BreakerState:
        """For metrics and the /models health view."""
        ...

    async def retry_after(self, key: str) -> float:
        """Seconds until a call may be let through again (0 when one may be now)."""
        ...

    async def close(self) -> None: ...


class CircuitOpen(ProviderUnavailable):
    """The endpoint's breaker refused the call. Not retried on the same endpoint: fail over.

    A ``ProviderUnavailable`` so that, once no fallback is left, it becomes a 503 with
    ``Retry-After`` like any other unavailable provider.
    """

    def __init__(self, permit: Permit, *, provider: str = "") -> None:
        message = f"Circuit {permit.state} for {permit.key}"
        super().__init__(message, provider=provider, retry_after=permit.retry_after)
        self.key = permit.key
        self.state = permit.state


async def call_with_breaker(
    breaker: CircuitBreaker, key: str, fn: Callable[[], Awaitable[T]], *, provider: str = ""
) -> T:
    """Run ``fn`` if the breaker for ``key`` allows it, and report the outcome.

    Raises :class:`CircuitOpen` when refused. Outcomes: success and ``ProviderRejected`` (the
    endpoint answered, the request was at fault) count as success; every other ``ProviderError``
    (unavailable, bad response, broken stream) as failure; anything else (cancellation, a bug on
    our side) says nothing about the endpoint and only releases a probe's slot.
    """
    permit = await breaker.acquire(key)
    if not permit.allowed:
        raise CircuitOpen(permit, provider=provider)
    try:
        result = await fn()
    except ProviderRejected:
        await breaker.record_success(permit)
        raise
    except ProviderError:
        await breaker.record_failure(permit)
        raise
    except BaseException:
        await breaker.release(permit)
        raise
    await breaker.record_success(permit)
    return result
