"""Circuit breakers (one contract, both backends, real Redis) and retries with backoff.

The breaker contract runs twice (``backend`` is parametrized): MemoryCircuitBreaker and
RedisCircuitBreaker on a real Redis, both on a ManualClock, so recovery periods and probe leases
pass only when a test says so. Retries get a recording ``sleep`` and a fixed ``jitter``: the exact
waits are asserted and nothing ever really sleeps.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL, delete_prefixed
from trellis.gateway.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRejected,
    ProviderStreamBroken,
    ProviderUnavailable,
)
from trellis.gateway.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    MemoryCircuitBreaker,
    Permit,
    RedisCircuitBreaker,
    RetryPolicy,
    call_with_breaker,
    call_with_retries,
)
from trellis.kit.clock import ManualClock
from trellis.settings.gateway import GatewaySettings

THRESHOLD = 3
RECOVERY = 10.0
LEASE = 4.0
US = 1e-6
KEY = "openai:http://127.0.0.1:8000/v1"
UNREACHABLE = "redis://127.0.0.1:1/0"

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@dataclass
class Backend:
    name: str
    breaker: CircuitBreaker
    clock: ManualClock

    async def fail(self, n: int, key: str = KEY) -> None:
        for _ in range(n):
            permit = await self.breaker.acquire(key)
            assert permit.allowed, permit
            await self.breaker.record_failure(permit)

    async def trip(self, key: str = KEY) -> None:
        await self.fail(THRESHOLD, key)
        assert await self.breaker.state(key) == OPEN

    async def to_half_open(self, key: str = KEY) -> None:
        await self.trip(key)
        self.clock.advance(RECOVERY)
        assert await self.breaker.state(key) == HALF_OPEN


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Backend]:
    clock = ManualClock()
    options = {"failure_threshold": THRESHOLD, "recovery_seconds": RECOVERY, "probe_lease_seconds": LEASE}
    if request.param == "memory":
        memory = MemoryCircuitBreaker(clock, **options)
        try:
            yield Backend("memory", memory, clock)
        finally:
            await memory.close()
        return
    client = Redis.from_url(REDIS_URL)
    shared = RedisCircuitBreaker(client, prefix=redis_prefix, clock=clock, timeout_seconds=2.0, **options)
    try:
        yield Backend("redis", shared, clock)
    finally:
        try:
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()


# --- the breaker contract, on both backends ---------------------------------------------------


async def test_fresh_breaker_is_closed_and_allows(backend: Backend) -> None:
    permit = await backend.breaker.acquire(KEY)
    assert (permit.key, permit.allowed, permit.state, permit.probe, permit.retry_after) == (
        KEY,
        True,
        CLOSED,
        False,
        0.0,
    )
    status = await backend.breaker.status(KEY)
    assert (status.state, status.failures, status.retry_after, status.probe_in_flight) == (CLOSED, 0, 0.0, False)
    assert await backend.breaker.retry_after(KEY) == 0.0


async def test_opens_after_exactly_threshold_consecutive_failures(backend: Backend) -> None:
    await backend.fail(THRESHOLD - 1)
    assert await backend.breaker.state(KEY) == CLOSED
    assert (await backend.breaker.status(KEY)).failures == THRESHOLD - 1
    assert (await backend.breaker.acquire(KEY)).allowed

    await backend.fail(1)
    assert await backend.breaker.state(KEY) == OPEN
    refused = await backend.breaker.acquire(KEY)
    assert not refused.allowed
    assert refused.state == OPEN
    assert refused.retry_after == pytest.approx(RECOVERY)


async def test_success_in_closed_state_resets_the_count(backend: Backend) -> None:
    await backend.fail(THRESHOLD - 1)
    await backend.breaker.record_success(await backend.breaker.acquire(KEY))
    assert (await backend.breaker.status(KEY)).failures == 0

    await backend.fail(THRESHOLD - 1)  # not consecutive with the first ones: still closed
    assert await backend.breaker.state(KEY) == CLOSED
    await backend.fail(1)
    assert await backend.breaker.state(KEY) == OPEN


async def test_open_refuses_with_a_shrinking_retry_after(backend: Backend) -> None:
    await backend.trip()
    backend.clock.advance(3.5)
    refused = await backend.breaker.acquire(KEY)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(RECOVERY - 3.5)
    assert refused.retry_after_header() == "7"  # 6.5 s rounds up
    assert await backend.breaker.retry_after(KEY) == pytest.approx(RECOVERY - 3.5)

    backend.clock.advance(RECOVERY - 3.5 - US)
    assert await backend.breaker.state(KEY) == OPEN
    assert await backend.breaker.retry_after(KEY) == pytest.approx(US)
    assert not (await backend.breaker.acquire(KEY)).allowed
    assert (await backend.breaker.acquire(KEY)).retry_after_header() == "1"  # never "0"


async def test_half_open_after_recovery_lets_exactly_one_probe_through(backend: Backend) -> None:
    await backend.to_half_open()
    assert await backend.breaker.retry_after(KEY) == 0.0

    probe = await backend.breaker.acquire(KEY)
    assert (probe.allowed, probe.state, probe.probe) == (True, HALF_OPEN, True)
    second = await backend.breaker.acquire(KEY)
    assert (second.allowed, second.state, second.probe) == (False, HALF_OPEN, False)
    assert second.retry_after == pytest.approx(LEASE)
    status = await backend.breaker.status(KEY)
    assert (status.state, status.probe_in_flight) == (HALF_OPEN, True)
    assert status.retry_after == pytest.approx(LEASE)


async def test_concurrent_acquires_in_half_open_yield_one_probe(backend: Backend) -> None:
    await backend.to_half_open()
    permits = await asyncio.gather(*(backend.breaker.acquire(KEY) for _ in range(25)))
    assert sum(p.allowed for p in permits) == 1
    assert [p.probe for p in permits if p.allowed] == [True]


async def test_probe_success_closes_and_resets(backend: Backend) -> None:
    await backend.to_half_open()
    await backend.breaker.record_success(await backend.breaker.acquire(KEY))
    status = await backend.breaker.status(KEY)
    assert (status.state, status.failures, status.retry_after, status.probe_in_flight) == (CLOSED, 0, 0.0, False)
    assert all([(await backend.breaker.acquire(KEY)).allowed for _ in range(5)])
    # A full run of failures is needed to open it again.
    await backend.fail(THRESHOLD - 1)
    assert await backend.breaker.state(KEY) == CLOSED
    await backend.fail(1)
    assert await backend.breaker.state(KEY) == OPEN


async def test_probe_failure_reopens_for_a_full_period(backend: Backend) -> None:
    await backend.to_half_open()
    probe = await backend.breaker.acquire(KEY)
    backend.clock.advance(2.5)  # the probe took a while to fail
    await backend.breaker.record_failure(probe)

    refused = await backend.breaker.acquire(KEY)
    assert (refused.allowed, refused.state) == (False, OPEN)
    assert refused.retry_after == pytest.approx(RECOVERY)  # counted from the probe's failure
    backend.clock.advance(RECOVERY - US)
    assert not (await backend.breaker.acquire(KEY)).allowed
    backend.clock.advance(US)
    again = await backend.breaker.acquire(KEY)
    assert (again.allowed, again.probe) == (True, True)


async def test_expired_probe_lease_frees_the_slot(backend: Backend) -> None:
    await backend.to_half_open()
    crashed = await backend.breaker.acquire(KEY)
    assert crashed.probe
    backend.clock.advance(LEASE - US)
    assert not (await backend.breaker.acquire(KEY)).allowed
    backend.clock.advance(US)
    assert (await backend.breaker.status(KEY)).probe_in_flight is False
    successor = await backend.breaker.acquire(KEY)
    assert (successor.allowed, successor.probe) == (True, True)
    assert not (await backend.breaker.acquire(KEY)).allowed

    # The first probe reporting late no longer decides anything: the successor does.
    await backend.breaker.record_success(crashed)
    assert await backend.breaker.state(KEY) == HALF_OPEN
    await backend.breaker.record_failure(successor)
    assert await backend.breaker.state(KEY) == OPEN


async def test_expired_lease_probe_still_counts_if_nobody_took_over(backend: Backend) -> None:
    await backend.to_half_open()
    slow = await backend.breaker.acquire(KEY)
    backend.clock.advance(LEASE * 3)
    await backend.breaker.record_success(slow)
    assert await backend.breaker.state(KEY) == CLOSED


async def test_released_probe_frees_the_slot_at_once(backend: Backend) -> None:
    await backend.to_half_open()
    cancelled = await backend.breaker.acquire(KEY)
    await backend.breaker.release(cancelled)
    assert await backend.breaker.state(KEY) == HALF_OPEN  # no verdict
    assert (await backend.breaker.status(KEY)).probe_in_flight is False
    assert (await backend.breaker.acquire(KEY)).probe


async def test_late_outcomes_of_calls_let_through_before_the_trip_are_ignored(backend: Backend) -> None:
    early = [await backend.breaker.acquire(KEY) for _ in range(2)]
    await backend.trip()
    backend.clock.advance(1)
    await backend.breaker.record_failure(early[0])  # does not extend the open period
    assert await backend.breaker.retry_after(KEY) == pytest.approx(RECOVERY - 1)

    backend.clock.advance(RECOVERY)
    probe = await backend.breaker.acquire(KEY)
    await backend.breaker.record_success(early[1])  # does not pre-empt the probe
    assert await backend.breaker.state(KEY) == HALF_OPEN
    await backend.breaker.record_success(probe)
    assert await backend.breaker.state(KEY) == CLOSED

    # ...and after closing, the old generation's failures are not counted either.
    await backend.breaker.record_failure(early[0])
    assert (await backend.breaker.status(KEY)).failures == 0


async def test_outcomes_of_refused_permits_are_ignored(backend: Backend) -> None:
    await backend.trip()
    refused = await backend.breaker.acquire(KEY)
    backend.clock.advance(RECOVERY)
    await backend.breaker.record_success(refused)
    assert await backend.breaker.state(KEY) == HALF_OPEN


async def test_keys_are_independent(backend: Backend) -> None:
    other = "llamacpp:local"
    await backend.trip()
    assert await backend.breaker.state(other) == CLOSED
    assert (await backend.breaker.acquire(other)).allowed
    await backend.fail(THRESHOLD - 1, key=other)
    assert await backend.breaker.state(other) == CLOSED

    backend.clock.advance(RECOVERY)
    assert (await backend.breaker.acquire(KEY)).probe
    # KEY's probe holds KEY's slot only.
    await backend.fail(1, key=other)
    assert await backend.breaker.state(other) == OPEN
    assert await backend.breaker.retry_after(other) == pytest.approx(RECOVERY)
    assert await backend.breaker.state(KEY) == HALF_OPEN


async def test_bare_key_outcomes_follow_the_same_state_machine(backend: Backend) -> None:
    """Reporting by key (no permit) works too; only the protection against late outcomes is lost."""
    breaker = backend.breaker
    assert await breaker.acquire(KEY)  # a permit is truthy exactly when allowed
    for _ in range(THRESHOLD - 1):
        await breaker.record_failure(KEY)
    await breaker.record_success(KEY)
    assert (await breaker.status(KEY)).failures == 0
    for _ in range(THRESHOLD):
        await breaker.record_failure(KEY)
    assert not await breaker.acquire(KEY)
    backend.clock.advance(1)
    await breaker.record_failure(KEY)  # ignored while open: the period is not extended
    await breaker.record_success(KEY)  # nor cut short
    assert await breaker.retry_after(KEY) == pytest.approx(RECOVERY - 1)

    backend.clock.advance(RECOVERY)
    assert (await breaker.acquire(KEY)).probe
    assert not await breaker.acquire(KEY)
    await breaker.release(KEY)
    assert (await breaker.acquire(KEY)).probe
    await breaker.record_failure(KEY)
    assert await breaker.retry_after(KEY) == pytest.approx(RECOVERY)
    backend.clock.advance(RECOVERY)
    assert (await breaker.acquire(KEY)).probe
    await breaker.record_success(KEY)
    assert await breaker.state(KEY) == CLOSED


async def test_call_with_breaker_counts_outcomes(backend: Backend) -> None:
    async def unavailable() -> str:
        raise ProviderUnavailable("503", provider="openai", status_code=503)

    async def rejected() -> str:
        raise ProviderRejected("400", provider="openai", status_code=400)

    async def ok() -> str:
        return "ok"

    for _ in range(THRESHOLD - 1):
        with pytest.raises(ProviderUnavailable):
            await call_with_breaker(backend.breaker, KEY, unavailable)
    with pytest.raises(ProviderRejected):  # the endpoint answered: that is health
        await call_with_breaker(backend.breaker, KEY, rejected)
    assert (await backend.breaker.status(KEY)).failures == 0

    for fn in (unavailable, unavailable):
        with pytest.raises(ProviderUnavailable):
            await call_with_breaker(backend.breaker, KEY, fn)
    with pytest.raises(ProviderBadResponse):
        await call_with_breaker(backend.breaker, KEY, _raiser(ProviderBadResponse("garbage")))
    assert await backend.breaker.state(KEY) == OPEN

    with pytest.raises(CircuitOpen) as caught:
        await call_with_breaker(backend.breaker, KEY, ok, provider="openai")
    assert isinstance(caught.value, ProviderUnavailable)
    assert caught.value.retry_after == pytest.approx(RECOVERY)
    assert (caught.value.key, caught.value.state, caught.value.provider) == (KEY, OPEN, "openai")

    backend.clock.advance(RECOVERY)
    assert await call_with_breaker(backend.breaker, KEY, ok) == "ok"
    assert await backend.breaker.state(KEY) == CLOSED


async def test_call_with_breaker_releases_a_cancelled_probe(backend: Backend) -> None:
    await backend.to_half_open()
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(call_with_breaker(backend.breaker, KEY, hangs))
    await started.wait()
    assert (await backend.breaker.status(KEY)).probe_in_flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = await backend.breaker.status(KEY)
    assert (status.state, status.probe_in_flight) == (HALF_OPEN, False)


def _raiser(exc: BaseException) -> Callable[[], Awaitable[str]]:
    async def fn() -> str:
        raise exc

    return fn


# --- Redis only: shared state, server time, key layout, Redis being down ---------------------


@pytest.fixture
async def clients(redis_prefix: str) -> AsyncIterator[list[Redis]]:
    """Two independent clients (two connection pools), like two API replicas."""
    made = [Redis.from_url(REDIS_URL) for _ in range(2)]
    try:
        yield made
    finally:
        try:
            await delete_prefixed(made[0], redis_prefix)
        finally:
            for client in made:
                await client.aclose()


def _replicas(clients: list[Redis], prefix: str, clock: ManualClock | None) -> list[RedisCircuitBreaker]:
    return [
        RedisCircuitBreaker(
            c,
            prefix=prefix,
            clock=clock,
            failure_threshold=THRESHOLD,
            recovery_seconds=RECOVERY,
            probe_lease_seconds=LEASE,
            timeout_seconds=2.0,
        )
        for c in clients
    ]


async def test_replicas_share_one_breaker(clients: list[Redis], redis_prefix: str) -> None:
    clock = ManualClock()
    one, two = _replicas(clients, redis_prefix, clock)
    for breaker in (one, two, one):  # failures seen by different replicas add up
        await breaker.record_failure(await breaker.acquire(KEY))
    assert await two.state(KEY) == OPEN
    refused = await two.acquire(KEY)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(RECOVERY)

    clock.advance(RECOVERY)
    probe = await one.acquire(KEY)
    assert probe.probe
    assert not (await two.acquire(KEY)).allowed  # one probe across all replicas
    await one.record_success(probe)
    assert await two.state(KEY) == CLOSED


async def test_one_probe_across_replicas_under_concurrency(clients: list[Redis], redis_prefix: str) -> None:
    clock = ManualClock()
    replicas = _replicas(clients, redis_prefix, clock)
    await replicas[0].record_failure(await replicas[0].acquire(KEY))
    for _ in range(THRESHOLD - 1):
        await replicas[1].record_failure(await replicas[1].acquire(KEY))
    clock.advance(RECOVERY)
    permits = await asyncio.gather(*(replicas[i % 2].acquire(KEY) for i in range(60)))
    assert sum(p.allowed for p in permits) == 1


async def test_server_time_recovery(clients: list[Redis], redis_prefix: str) -> None:
    """Without an injected clock the Redis server's TIME drives the recovery period."""
    (breaker,) = _replicas(clients[:1], redis_prefix, None)
    for _ in range(THRESHOLD):
        await breaker.record_failure(await breaker.acquire(KEY))
    refused = await breaker.acquire(KEY)
    assert not refused.allowed
    assert RECOVERY - 1.0 < refused.retry_after <= RECOVERY
    assert refused.retry_after_header() == "10"


async def test_keys_live_under_the_prefix_and_expire(clients: list[Redis], redis_prefix: str) -> None:
    client = clients[0]
    breaker = RedisCircuitBreaker(
        client,
        prefix=redis_prefix,
        failure_threshold=THRESHOLD,
        recovery_seconds=RECOVERY,
        probe_lease_seconds=LEASE,
        idle_ttl_seconds=60,
        timeout_seconds=2.0,
    )
    assert (await breaker.acquire(KEY)).allowed
    assert [k async for k in client.scan_iter(match=f"{redis_prefix}*")] == []  # reads write nothing
    await breaker.record_failure(await breaker.acquire(KEY))
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
    assert keys == [f"{redis_prefix}{KEY}".encode()]
    ttl_ms = await client.pttl(keys[0])
    assert 60_000 < ttl_ms <= (RECOVERY + LEASE + 60) * 1000


async def test_unreachable_redis_allows_calls() -> None:
    client = Redis.from_url(UNREACHABLE, socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        breaker = RedisCircuitBreaker(client, failure_threshold=1, timeout_seconds=0.5)
        for _ in range(3):
            permit = await breaker.acquire(KEY)
            assert permit == Permit(KEY, True, CLOSED)
            await breaker.record_failure(permit)  # neither raises nor counts
            await breaker.release(permit)
            await breaker.record_failure(KEY)
        assert await breaker.state(KEY) == CLOSED
        assert await breaker.retry_after(KEY) == 0.0
        assert await call_with_breaker(breaker, KEY, _constant("still served")) == "still served"
    finally:
        await client.aclose()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: Redis hanging, not refusing."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_hanging_redis_is_cut_off_by_the_timeout(silent_server: str) -> None:
    client = Redis.from_url(silent_server, socket_timeout=30, socket_connect_timeout=30)
    try:
        breaker = RedisCircuitBreaker(client, timeout_seconds=0.1)
        started = asyncio.get_running_loop().time()
        permit = await breaker.acquire(KEY)
        assert permit.allowed
        await breaker.record_success(Permit(KEY, True, CLOSED, generation=0))
        assert await breaker.state(KEY) == CLOSED
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await client.aclose()


def _constant(value: str) -> Callable[[], Awaitable[str]]:
    async def fn() -> str:
        return value

    return fn


# --- retries ---------------------------------------------------------------------------------


class Recorder:
    """A fake ``sleep`` and ``on_retry`` that record instead of waiting."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[int, ProviderUnavailable, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, attempt: int, exc: ProviderUnavailable, wait: float) -> None:
        self.retries.append((attempt, exc, wait))


class Script:
    """A provider call that raises the given errors in turn, then returns ``value``."""

    def __init__(self, *errors: BaseException, value: str = "done") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def unavailable(retry_after: float | None = None) -> ProviderUnavailable:
    return ProviderUnavailable("upstream 503", provider="openai", status_code=503, retry_after=retry_after)


def no_jitter_expected() -> float:
    raise AssertionError("jitter must not be drawn here")


POLICY = RetryPolicy(max_attempts=5, backoff_initial_seconds=0.25, backoff_max_seconds=0.75, max_retry_after_seconds=3)


async def test_waits_double_and_are_capped_then_the_last_error_is_raised() -> None:
    rec = Recorder()
    errors = [unavailable() for _ in range(5)]
    call = Script(*errors)
    with pytest.raises(ProviderUnavailable) as caught:
        await call_with_retries(call, POLICY, sleep=rec.sleep, jitter=lambda: 1.0, on_retry=rec.on_retry)
    assert caught.value is errors[-1]  # re-raised as it is, not wrapped in a RetryError
    assert call.calls == 5
    assert rec.sleeps == [0.25, 0.5, 0.75, 0.75]
    assert rec.retries == [(1, errors[0], 0.25), (2, errors[1], 0.5), (3, errors[2], 0.75), (4, errors[3], 0.75)]


async def test_full_jitter_scales_the_ceiling() -> None:
    rec = Recorder()
    draws = iter([0.5, 0.0, 0.9])
    with pytest.raises(ProviderUnavailable):
        await call_with_retries(
            Script(*(unavailable() for _ in range(4))),
            RetryPolicy(max_attempts=4, backoff_initial_seconds=1.0, backoff_max_seconds=8.0),
            sleep=rec.sleep,
            jitter=lambda: next(draws),
        )
    assert rec.sleeps == pytest.approx([0.5, 0.0, 3.6])


async def test_seeded_random_gives_a_reproducible_sequence() -> None:
    policy = RetryPolicy(max_attempts=4, backoff_initial_seconds=0.25, backoff_max_seconds=8.0)
    runs = []
    for _ in range(2):
        rec = Recorder()
        with pytest.raises(ProviderUnavailable):
            await call_with_retries(
                Script(*(unavailable() for _ in range(4))), policy, sleep=rec.sleep, jitter=random.Random(7).random
            )
        runs.append(rec.sleeps)
    expected_rng = random.Random(7)
    assert runs[0] == runs[1] == [expected_rng.random() * ceiling for ceiling in (0.25, 0.5, 1.0)]


async def test_success_on_the_third_attempt_returns_the_value() -> None:
    rec = Recorder()
    first, second = unavailable(), ProviderUnavailable("timeout", provider="openai")
    call = Script(first, second, value="hello")
    result = await call_with_retries(call, POLICY, sleep=rec.sleep, jitter=lambda: 1.0, on_retry=rec.on_retry)
    assert result == "hello"
    assert call.calls == 3
    assert rec.sleeps == [0.25, 0.5]
    assert rec.retries == [(1, first, 0.25), (2, second, 0.5)]


async def test_retry_after_is_honoured_exactly() -> None:
    rec = Recorder()
    throttled, limit = unavailable(retry_after=2.5), unavailable(retry_after=3.0)  # 3.0 is the cap: still waited
    call = Script(throttled, limit, unavailable(retry_after=0))
    assert await call_with_retries(call, POLICY, sleep=rec.sleep, jitter=no_jitter_expected, on_retry=rec.on_retry)
    assert rec.sleeps == [2.5, 3.0, 0.0]
    assert [r[0::2] for r in rec.retries] == [(1, 2.5), (2, 3.0), (3, 0.0)]


async def test_retry_after_above_the_cap_reraises_at_once() -> None:
    rec = Recorder()
    too_long = unavailable(retry_after=3.5)
    call = Script(unavailable(), too_long)
    with pytest.raises(ProviderUnavailable) as caught:
        await call_with_retries(call, POLICY, sleep=rec.sleep, jitter=lambda: 1.0, on_retry=rec.on_retry)
    assert caught.value is too_long
    assert call.calls == 2
    assert rec.sleeps == [0.25]  # only the wait before the second attempt
    assert [r[0] for r in rec.retries] == [1]


@pytest.mark.parametrize(
    "error",
    [
        ProviderRejected("bad request", status_code=400),
        ProviderBadResponse("not JSON"),
        ProviderStreamBroken("cut"),
        ProviderError("unclassified"),
        CircuitOpen(Permit(KEY, False, OPEN, retry_after=1.0)),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_non_retryable_errors_are_raised_after_one_attempt(error: BaseException) -> None:
    rec = Recorder()
    call = Script(error, value="unreachable")
    with pytest.raises(type(error)) as caught:
        await call_with_retries(call, POLICY, sleep=rec.sleep, jitter=no_jitter_expected, on_retry=rec.on_retry)
    assert caught.value is error
    assert call.calls == 1
    assert rec.sleeps == []
    assert rec.retries == []


async def test_one_attempt_policy_never_retries() -> None:
    rec = Recorder()
    call = Script(unavailable(retry_after=0.1))
    with pytest.raises(ProviderUnavailable):
        await call_with_retries(call, RetryPolicy(max_attempts=1), sleep=rec.sleep, on_retry=rec.on_retry)
    assert (call.calls, rec.sleeps, rec.retries) == (1, [], [])


async def test_a_lambda_returning_a_coroutine_is_awaited() -> None:
    rec = Recorder()
    call = Script(unavailable(), value="via lambda")
    assert await call_with_retries(lambda: call(), POLICY, sleep=rec.sleep, jitter=lambda: 1.0) == "via lambda"
    assert call.calls == 2


async def test_policy_from_settings() -> None:
    settings = GatewaySettings(
        max_attempts=4, backoff_initial_seconds=0.5, backoff_max_seconds=2, max_retry_after_seconds=7
    )
    policy = RetryPolicy.from_settings(settings)
    assert policy == RetryPolicy(4, 0.5, 2.0, 7.0)
    assert [policy.backoff_ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert RetryPolicy.from_settings(GatewaySettings()) == RetryPolicy(3, 0.25, 8.0, 10.0)
    assert RetryPolicy(max_attempts=10).backoff_ceiling(10_000) == 8.0  # no overflow


async def test_policy_helpers_for_hand_rolled_loops() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_initial_seconds=0.25, max_retry_after_seconds=3)
    assert policy.should_retry(1, unavailable())
    assert policy.should_retry(2, unavailable(retry_after=3))
    assert not policy.should_retry(3, unavailable())  # attempts used up
    assert not policy.should_retry(1, unavailable(retry_after=3.01))
    assert not policy.should_retry(1, ProviderRejected("no"))
    assert not policy.should_retry(1, CircuitOpen(Permit(KEY, False, OPEN, retry_after=1)))
    assert policy.wait_for(2, unavailable(), jitter=lambda: 0.5) == 0.25
    assert policy.wait_for(2, unavailable(retry_after=1.5), jitter=no_jitter_expected) == 1.5


async def test_default_sleep_is_asyncio_sleep() -> None:
    call = Script(unavailable(retry_after=0), value="ok")  # asyncio.sleep(0): no real waiting
    assert await call_with_retries(call, POLICY, sleep=None) == "ok"
    assert call.calls == 2


async def test_retries_stop_when_the_breaker_opens() -> None:
    """Retries outside, breaker inside: the attempt that finds the breaker open ends the loop."""
    clock = ManualClock()
    breaker = MemoryCircuitBreaker(clock, failure_threshold=2, recovery_seconds=RECOVERY)
    rec = Recorder()
    call = Script(*(unavailable() for _ in range(5)))
    with pytest.raises(CircuitOpen) as caught:
        await call_with_retries(
            lambda: call_with_breaker(breaker, KEY, call), POLICY, sleep=rec.sleep, jitter=lambda: 1.0
        )
    assert call.calls == 2  # the third attempt never reached the provider
    assert rec.sleeps == [0.25, 0.5]
    assert caught.value.retry_after == pytest.approx(RECOVERY)
