"""The credential cache: used when it is safe, never after access was taken away, in any process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import event, make_url

from tests.conftest import REDIS_URL, Harness
from trellis.auth.cache import AuthEpoch, EpochCache, FileAuthEpoch, NoAuthEpoch, PostgresAuthEpoch, RedisAuthEpoch
from trellis.kit.clock import ManualClock
from trellis.runtime import build_runtime
from trellis.settings import Settings
from trellis.storage.database import Database

# --- the epoch contract, on both shared backends ------------------------------------------------


@pytest.fixture(params=["file", "redis"])
async def epoch_pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[AuthEpoch, AuthEpoch]]:
    """Two epoch readers/writers over one shared store, as two processes would have."""
    if request.param == "file":
        path = tmp_path / "db.sqlite.auth-epoch"
        yield FileAuthEpoch(path), FileAuthEpoch(path)
        return
    key = f"trellis-test:{uuid.uuid4().hex}:auth:epoch"
    first, second = Redis.from_url(REDIS_URL), Redis.from_url(REDIS_URL)
    try:
        yield RedisAuthEpoch(first, key), RedisAuthEpoch(second, key)
    finally:
        await first.delete(key)
        await first.aclose()
        await second.aclose()


async def test_epoch_is_stable_until_bumped(epoch_pair: tuple[AuthEpoch, AuthEpoch]) -> None:
    one, _ = epoch_pair
    before = await one.current()
    assert before is not None
    assert await one.current() == before


async def test_every_bump_is_seen_by_every_reader(epoch_pair: tuple[AuthEpoch, AuthEpoch]) -> None:
    one, two = epoch_pair
    seen = {await two.current()}
    for writer in (one, two, one, one, two):
        await writer.bump()
        value = await two.current()
        assert value == await one.current()
        assert value not in seen
        seen.add(value)


async def test_unreachable_redis_epoch_is_unknown() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        epoch = RedisAuthEpoch(client, "x")
        assert await epoch.current() is None
        await epoch.bump()  # logged, not raised: the revocation itself already committed
    finally:
        await client.aclose()


async def test_no_epoch_means_no_caching() -> None:
    assert await NoAuthEpoch().current() is None


def test_cache_entries_die_with_their_epoch_and_ttl() -> None:
    clock = ManualClock()
    cache: EpochCache[str] = EpochCache(clock, ttl_seconds=10, max_entries=3)
    cache.put("a", "alpha", "e1")
    assert cache.get("a", "e1") == "alpha"
    assert cache.get("a", "e2") is None
    assert cache.get("a", "e1") is None  # dropped once seen stale
    cache.put("b", "beta", "e1")
    clock.advance(10.5)
    assert cache.get("b", "e1") is None
    for name in ("c", "d", "e", "f"):
        cache.put(name, name, "e1")
    assert cache.get("f", "e1") == "f"
    assert sum(cache.get(n, "e1") is not None for n in ("c", "d", "e", "f")) <= 3


# --- over HTTP: a second process (the CLI, another replica) takes access away ----------------


def count_key_lookups(harness: Harness) -> list[str]:
    statements: list[str] = []

    @event.listens_for(harness.runtime.database.engine.sync_engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_keys" in statement or "FROM users" in statement:
            statements.append(statement)

    return statements


CACHING_SETUPS = {
    "embedded-file-epoch": lambda redis_prefix, pg: {},
    "redis-epoch": lambda redis_prefix, pg: {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix},
    "postgres-notify-epoch": lambda redis_prefix, pg: {"database_url": pg},
    # Behind PgBouncer in transaction mode LISTEN cannot work: the operator turns it off.
    "postgres-no-listen": lambda redis_prefix, pg: {"database_url": pg, "auth_cache_listen": False},
}


@pytest.fixture(params=sorted(CACHING_SETUPS))
def setup(request: pytest.FixtureRequest, redis_prefix: str) -> tuple[str, dict[str, Any]]:
    pg = request.getfixturevalue("postgres_url") if request.param.startswith("postgres") else ""
    return request.param, CACHING_SETUPS[request.param](redis_prefix, pg)


@asynccontextmanager
async def change_arrives(harness: Harness) -> AsyncIterator[None]:
    """Around another process's change: on PostgreSQL the epoch is pushed (NOTIFY), so wait until the
    notification has reached this process (milliseconds; the window is in PostgresAuthEpoch's
    docstring). The other epochs are read on every request and need no wait."""
    epoch = harness.runtime.auth.epoch
    if isinstance(epoch, PostgresAuthEpoch):
        epoch.notified.clear()
    yield
    if isinstance(epoch, PostgresAuthEpoch):
        await asyncio.wait_for(epoch.notified.wait(), timeout=10)


async def test_cache_spares_the_database_only_where_safe(
    make_harness: Callable[..., Any], setup: tuple[str, dict[str, Any]]
) -> None:
    name, overrides = setup
    async with make_harness(**overrides) as h:
        _, key = await h.user_with_key("cached")
        lookups = count_key_lookups(h)
        for _ in range(3):
            assert (await h.client.get("/api/v1/auth/me", headers=h.auth(key))).status_code == 200
        expected = 3 if name == "postgres-no-listen" else 1
        assert len(lookups) == expected, (name, lookups)


async def test_revocation_by_another_process_is_seen_on_the_next_request(
    make_harness: Callable[..., Any], make_settings: Callable[..., Settings], setup: tuple[str, dict[str, Any]]
) -> None:
    _, overrides = setup
    async with make_harness(**overrides) as h:
        _, key = await h.user_with_key("victim")
        key_id = (await h.client.get("/api/v1/auth/me", headers=h.auth(key))).json()["data"]["key_id"]
        assert (await h.client.get("/api/v1/auth/me", headers=h.auth(key))).status_code == 200  # now cached
        other = build_runtime(make_settings(**overrides))  # its own AuthService and cache, like the CLI
        async with change_arrives(h):
            try:
                await other.auth.revoke_key(h.admin, key_id)
            finally:
                await other.close()
        response = await h.client.get("/api/v1/auth/me", headers=h.auth(key))
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "API key has been revoked"


async def test_disabling_by_another_process_stops_keys_and_tokens(
    make_harness: Callable[..., Any], make_settings: Callable[..., Settings], setup: tuple[str, dict[str, Any]]
) -> None:
    _, overrides = setup
    async with make_harness(**overrides) as h:
        from trellis.auth.schemas import UserCreate

        user = await h.runtime.auth.create_user(h.admin, UserCreate(username="tok", password="password-123"))
        _, key = await h.create_key(user.id)
        token = (
            await h.client.post("/api/v1/auth/token", json={"username": "tok", "password": "password-123"})
        ).json()["data"]["access_token"]
        for credential in (key, token, key, token):
            assert (await h.client.get("/api/v1/auth/me", headers=h.auth(credential))).status_code == 200
        other = build_runtime(make_settings(**overrides))
        async with change_arrives(h):
            try:
                await other.auth.set_user_disabled(h.admin, user.id, True)
            finally:
                await other.close()
        for credential in (key, token):
            assert (await h.client.get("/api/v1/auth/me", headers=h.auth(credential))).status_code == 401


# --- PostgreSQL alone: the epoch is pushed by NOTIFY -------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Wait for something another process does (a backend terminated), polling the event loop."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.01)


async def test_postgres_epoch_is_unknown_while_its_connection_is_down(postgres_url: str) -> None:
    clock = ManualClock()
    database = Database(postgres_url)
    epoch = PostgresAuthEpoch(database, _asyncpg_dsn(postgres_url), clock, retry_seconds=5)
    try:
        first = await epoch.current()
        assert first is not None
        assert await epoch.current() == first  # stable while nothing is notified

        # The listening backend goes away (a server restart, a network cut): notifications could be
        # missed from here on, so nothing cached may be trusted.
        admin = await asyncpg.connect(_asyncpg_dsn(postgres_url))
        try:
            terminated = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        finally:
            await admin.close()
        assert terminated == 1

        async def unknown() -> bool:
            return await epoch.current() is None

        await _until(unknown)
        await epoch.bump()  # still tells the others (through the database), even while not listening
        assert await epoch.current() is None  # no new attempt before retry_seconds
        clock.advance(5)
        again = await epoch.current()
        assert again is not None
        assert again != first  # what was cached before the gap is not trusted after it
    finally:
        await epoch.aclose()
        await database.dispose()


async def test_unreachable_postgres_epoch_is_unknown() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
    database = Database(url)
    epoch = PostgresAuthEpoch(database, _asyncpg_dsn(url), ManualClock(), connect_timeout=0.5)
    try:
        assert await epoch.current() is None
        await epoch.bump()  # logged, not raised: the revocation itself already committed
    finally:
        await epoch.aclose()
        await database.dispose()


async def test_concurrent_loads_of_one_key_share_one_call() -> None:
    import asyncio

    from trellis.auth.cache import SingleFlight

    flight: SingleFlight[int] = SingleFlight()
    calls: list[str] = []
    release = asyncio.Event()

    async def load(key: str) -> int:
        calls.append(key)
        await release.wait()
        if key == "bad":
            raise RuntimeError("the database is away")
        return len(calls)

    waiting = [
        asyncio.create_task(flight.load(key, lambda key=key: load(key))) for key in ["a"] * 50 + ["b", "bad", "bad"]
    ]
    await asyncio.sleep(0)  # let every task start waiting (a yield, not a timed wait)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert sorted(calls) == ["a", "b", "bad"]  # one call per key, however many asked
    assert len({r for r in results[:50]}) == 1
    assert all(isinstance(r, RuntimeError) for r in results[51:])
    # Once done, the next load calls again.
    assert await flight.load("a", lambda: load("a")) == 4
