"""Retries on the same endpoint: capped exponential backoff with full jitter, on tenacity.

Only ``ProviderUnavailable`` (timeouts, connection errors, 429, 5xx) is retried; a rejected request,
a garbage answer or a broken stream is raised at once, and so is :class:`CircuitOpen` (waiting for a
breaker is the failover's decision, not the retry loop's).

After the n-th failed attempt the wait is ``jitter() * min(backoff_max, backoff_initial * 2**(n-1))``
("full jitter"), unless the provider sent ``Retry-After``: then exactly that, if it is at most
``max_retry_after_seconds``; a longer one stops retrying and re-raises so the gateway can fail over.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeGuard, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from trellis.gateway.errors import ProviderUnavailable
from trellis.gateway.resilience.base import CircuitOpen
from trellis.settings.gateway import GatewaySettings

T = TypeVar("T")

# (attempt that failed, 1-based; its exception; seconds about to be waited)
OnRetry = Callable[[int, ProviderUnavailable, float], None]
Sleep = Callable[[float], Awaitable[None]]

# 2**30 * any sane initial backoff is far past any cap: keep the power from growing without bound.
_MAX_EXPONENT = 30


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Attempts include the first try.
    max_attempts: int = 3
    backoff_initial_seconds: float = 0.25
    backoff_max_seconds: float = 8.0
    max_retry_after_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_initial_seconds < 0 or self.backoff_max_seconds < 0 or self.max_retry_after_seconds < 0:
            raise ValueError("backoff and retry-after limits cannot be negative")

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            backoff_initial_seconds=settings.backoff_initial_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
            max_retry_after_seconds=settings.max_retry_after_seconds,
        )

    def backoff_ceiling(self, attempt: int) -> float:
        """The most the jittered wait after the ``attempt``-th failure (1-based) can be."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        return min(self.backoff_max_seconds, self.backoff_initial_seconds * 2.0**exponent)

    def honours(self, exc: ProviderUnavailable) -> bool:
        """False when the provider asked for a longer wait than we are willing to do here."""
        return exc.retry_after is None or exc.retry_after <= self.max_retry_after_seconds

    def wait_after(self, attempt: int, exc: ProviderUnavailable, jitter: float) -> float:
        """Seconds to wait after the ``attempt``-th failure; ``jitter`` is in [0, 1]."""
        if exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        return min(max(jitter, 0.0), 1.0) * self.backoff_ceiling(attempt)

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        """After the ``attempt``-th try failed with ``exc``, is another try due?"""
        return is_retryable(exc) and attempt < self.max_attempts and self.honours(exc)

    def wait_for(self, attempt: int, exc: ProviderUnavailable, jitter: Callable[[], float] = random.random) -> float:
        """``wait_after`` drawing its own jitter (only when no Retry-After decides); for loops that
        cannot go through ``call_with_retries``, such as a stream's connect-and-first-chunk step."""
        return self.wait_after(attempt, exc, 0.0 if exc.retry_after is not None else jitter())


def is_retryable(exc: BaseException) -> TypeGuard[ProviderUnavailable]:
    return isinstance(exc, ProviderUnavailable) and not isinstance(exc, CircuitOpen)


def _failure(state: RetryCallState) -> ProviderUnavailable:
    # Only called for outcomes that passed ``is_retryable``.
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert isinstance(exc, ProviderUnavailable)
    return exc


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep | None = None,
    jitter: Callable[[], float] = random.random,
    on_retry: OnRetry | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, raises something not retryable, or the policy gives up.

    The last exception is re-raised as it is (never wrapped in tenacity's ``RetryError``).
    ``sleep`` (default ``asyncio.sleep``) and ``jitter`` are injectable so tests see the exact
    waits without waiting.
    """

    def stop(state: RetryCallState) -> bool:
        return not policy.should_retry(state.attempt_number, _failure(state))

    def wait(state: RetryCallState) -> float:
        # tenacity computes the wait before asking stop(): when giving up, draw no jitter.
        if stop(state):
            return 0.0
        exc = _failure(state)
        if exc.retry_after is not None:
            return policy.wait_after(state.attempt_number, exc, 0.0)
        return policy.wait_after(state.attempt_number, exc, jitter())

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, _failure(state), state.upcoming_sleep)

    retrying = AsyncRetrying(
        sleep=sleep or asyncio.sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    # ``async for`` rather than ``retrying(fn)``: tenacity only awaits what it recognises as a
    # coroutine function, and ``lambda: provider.complete(...)`` is not one.
    async for attempt in retrying:
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity either returns a result or re-raises")
