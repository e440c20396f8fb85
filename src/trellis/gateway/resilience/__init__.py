"""Resilience for provider calls: a circuit breaker per endpoint and retries with backoff.

The gateway composes them per endpoint, retries outside, breaker inside (each attempt asks the
breaker, and a breaker that opens mid-way stops the retries with ``CircuitOpen``)::

    result = await call_with_retries(
        lambda: call_with_breaker(breaker, endpoint, lambda: provider.complete(request)),
        RetryPolicy.from_settings(settings.gateway),
    )
"""

from trellis.gateway.resilience.base import (
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    CircuitBreaker,
    CircuitOpen,
    Permit,
    call_with_breaker,
)
from trellis.gateway.resilience.memory import MemoryCircuitBreaker
from trellis.gateway.resilience.redis import RedisCircuitBreaker
from trellis.gateway.resilience.retry import OnRetry, RetryPolicy, call_with_retries, is_retryable

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStatus",
    "CircuitBreaker",
    "CircuitOpen",
    "MemoryCircuitBreaker",
    "OnRetry",
    "Permit",
    "RedisCircuitBreaker",
    "RetryPolicy",
    "call_with_breaker",
    "call_with_retries",
    "is_retryable",
]
