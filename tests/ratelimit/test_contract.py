"""The limiter contract, asserted identically on the in-process and the Redis backend.

Every test runs twice (``backend`` is parametrized): MemoryRateLimiter and RedisRateLimiter on a
real Redis, both driven by a ManualClock so that refill happens only when the test says so.
"""

from __future__ import annotations

import math

import pytest

from tests.ratelimit.conftest import Backend
from trellis.ratelimit.base import MICROS, Decision, GcraParams
from trellis.settings import RateRule

# 5 requests per 10 s: the emission interval is exactly 2 s.
RULE = RateRule(capacity=5, period_seconds=10)
EMISSION = 2.0

# Rules whose emission interval is not a round number of seconds (60/7 s, 1/3 s, 1 ms), to catch
# rounding between float seconds and integer microseconds.
AWKWARD_RULES = [
    RateRule(capacity=5, period_seconds=10),
    RateRule(capacity=7, period_seconds=60),
    RateRule(capacity=3, period_seconds=1),
    RateRule(capacity=1000, period_seconds=1),
    RateRule(capacity=1, period_seconds=3600),
]


def emission_seconds(rule: RateRule) -> float:
    return GcraParams.from_rule(rule).emission_us / MICROS


async def take(
    backend: Backend, n: int, key: str = "k", rule: RateRule = RULE, policy: str = "default"
) -> list[Decision]:
    return [await backend.limiter.acquire(key, rule, policy=policy) for _ in range(n)]


def rule_id(rule: RateRule) -> str:
    return f"{rule.capacity}per{rule.period_seconds:g}s"


@pytest.mark.parametrize("rule", AWKWARD_RULES, ids=rule_id)
async def test_exactly_capacity_allowed_then_denied(backend: Backend, rule: RateRule) -> None:
    allowed = await take(backend, rule.capacity, rule=rule)
    assert all(d.allowed for d in allowed), [d for d in allowed if not d.allowed]
    assert [d.remaining for d in allowed] == list(range(rule.capacity - 1, -1, -1))
    assert {d.limit for d in allowed} == {rule.capacity}

    denied = await take(backend, 3, rule=rule)
    assert [d.allowed for d in denied] == [False, False, False]
    assert [d.remaining for d in denied] == [0, 0, 0]


async def test_allowed_decision_and_headers(backend: Backend) -> None:
    first = await backend.limiter.acquire("k", RULE, policy="default")
    assert first == Decision(
        allowed=True,
        limit=5,
        remaining=4,
        retry_after=0.0,
        reset_after=EMISSION,
        policy="default",
        window_seconds=10,
    )
    assert first.headers() == {
        "RateLimit-Policy": '"default";q=5;w=10',
        "RateLimit": '"default";r=4;t=2',
    }
    second = await backend.limiter.acquire("k", RULE, policy="default")
    # The bucket is full again once both used cells have been emitted.
    assert second.reset_after == pytest.approx(2 * EMISSION)
    assert second.headers()["RateLimit"] == '"default";r=3;t=4'


async def test_denied_decision_and_headers(backend: Backend) -> None:
    await take(backend, RULE.capacity)
    denied = await backend.limiter.acquire("k", RULE, policy="default")
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(EMISSION)
    assert denied.reset_after == pytest.approx(RULE.period_seconds)
    assert denied.headers() == {
        "RateLimit-Policy": '"default";q=5;w=10',
        "RateLimit": '"default";r=0;t=10',
        "Retry-After": "2",
    }


async def test_retry_after_shrinks_with_time_and_is_rounded_up(backend: Backend) -> None:
    await take(backend, RULE.capacity)
    backend.clock.advance(0.5)
    denied = await backend.limiter.acquire("k", RULE, policy="default")
    assert denied.retry_after == pytest.approx(1.5)
    assert denied.headers()["Retry-After"] == "2"  # 1.5 s rounds up: never tell a client to come back early
    assert denied.headers()["RateLimit"] == '"default";r=0;t=10'  # ceil(9.5)

    backend.clock.advance(1.4)
    denied = await backend.limiter.acquire("k", RULE, policy="default")
    assert denied.retry_after == pytest.approx(0.1)
    assert denied.headers()["Retry-After"] == "1"


@pytest.mark.parametrize("rule", AWKWARD_RULES, ids=rule_id)
async def test_one_emission_interval_refills_exactly_one(backend: Backend, rule: RateRule) -> None:
    await take(backend, rule.capacity, rule=rule)
    interval = emission_seconds(rule)
    for round_ in range(4):
        # Refused requests do not push the bucket further into debt.
        assert not any(d.allowed for d in await take(backend, 3, rule=rule)), round_
        denied = await backend.limiter.acquire("k", rule, policy="default")
        assert denied.retry_after == pytest.approx(interval), round_

        backend.clock.advance(interval - 1 / MICROS)
        assert not (await backend.limiter.acquire("k", rule, policy="default")).allowed, (
            f"round {round_}: allowed 1 us before the emission interval elapsed"
        )
        backend.clock.advance(1 / MICROS)
        one = await backend.limiter.acquire("k", rule, policy="default")
        assert one.allowed, f"round {round_}: refused exactly one emission interval ({interval} s) later"
        assert one.remaining == 0
        assert not (await backend.limiter.acquire("k", rule, policy="default")).allowed, round_


@pytest.mark.parametrize("rule", AWKWARD_RULES, ids=rule_id)
async def test_retry_after_is_honest(backend: Backend, rule: RateRule) -> None:
    """Coming back after exactly ``retry_after`` seconds succeeds, even with awkward intervals."""
    await take(backend, rule.capacity, rule=rule)
    for _ in range(3):
        denied = await backend.limiter.acquire("k", rule, policy="default")
        assert not denied.allowed
        backend.clock.advance(denied.retry_after)
        assert (await backend.limiter.acquire("k", rule, policy="default")).allowed


async def test_full_period_refills_fully_never_above_capacity(backend: Backend) -> None:
    await take(backend, RULE.capacity)
    backend.clock.advance(RULE.period_seconds)
    again = await take(backend, RULE.capacity + 2)
    assert [d.allowed for d in again] == [True] * RULE.capacity + [False, False]
    assert [d.remaining for d in again[: RULE.capacity]] == [4, 3, 2, 1, 0]

    # Idle for many periods: still only `capacity`, no credit accumulates.
    backend.clock.advance(100 * RULE.period_seconds)
    again = await take(backend, RULE.capacity + 2)
    assert [d.allowed for d in again] == [True] * RULE.capacity + [False, False]
    assert again[0].remaining == RULE.capacity - 1


async def test_partial_refill_is_proportional(backend: Backend) -> None:
    await take(backend, RULE.capacity)
    backend.clock.advance(3 * EMISSION)
    again = await take(backend, 4)
    assert [d.allowed for d in again] == [True, True, True, False]
    assert [d.remaining for d in again[:3]] == [2, 1, 0]


async def test_keys_are_independent(backend: Backend) -> None:
    await take(backend, RULE.capacity, key="alice")
    assert not (await backend.limiter.acquire("alice", RULE, policy="default")).allowed

    bob = await take(backend, RULE.capacity + 1, key="bob")
    assert [d.allowed for d in bob] == [True] * RULE.capacity + [False]
    assert bob[0].remaining == RULE.capacity - 1
    assert not (await backend.limiter.acquire("alice", RULE, policy="default")).allowed


async def test_each_key_uses_its_own_rule(backend: Backend) -> None:
    small = RateRule(capacity=2, period_seconds=10)
    large = RateRule(capacity=4, period_seconds=60)
    results: dict[str, list[bool]] = {"small": [], "large": []}
    # Interleave the two keys so neither rule can leak into the other bucket.
    for _ in range(6):
        d_small = await backend.limiter.acquire("small", small, policy="default")
        d_large = await backend.limiter.acquire("large", large, policy="ai")
        results["small"].append(d_small.allowed)
        results["large"].append(d_large.allowed)
        assert d_small.limit == 2
        assert d_large.limit == 4
    assert results == {"small": [True] * 2 + [False] * 4, "large": [True] * 4 + [False] * 2}

    assert d_small.retry_after == pytest.approx(5.0)
    assert d_large.retry_after == pytest.approx(15.0)
    assert d_small.headers() == {
        "RateLimit-Policy": '"default";q=2;w=10',
        "RateLimit": '"default";r=0;t=10',
        "Retry-After": "5",
    }
    assert d_large.headers() == {
        "RateLimit-Policy": '"ai";q=4;w=60',
        "RateLimit": '"ai";r=0;t=60',
        "Retry-After": "15",
    }

    # Refill follows each key's own interval: after 5 s only the small bucket has a new cell.
    backend.clock.advance(5)
    assert (await backend.limiter.acquire("small", small, policy="default")).allowed
    assert not (await backend.limiter.acquire("large", large, policy="ai")).allowed


async def test_header_window_is_rounded_up(backend: Backend) -> None:
    rule = RateRule(capacity=3, period_seconds=1.5)
    decision = await backend.limiter.acquire("k", rule, policy="default")
    assert decision.headers()["RateLimit-Policy"] == f'"default";q=3;w={math.ceil(1.5)}'
    assert decision.headers()["RateLimit"] == '"default";r=2;t=1'  # ceil(0.5)
