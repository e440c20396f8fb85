"""Exactly ``capacity`` requests get through a burst: in one process, and across two servers.

The in-process test fires 200 concurrent requests at one app (in-process limiter, then the Redis
limiter). The cross-process test starts two real ``trellis serve`` processes sharing one SQLite
file and one Redis, and splits 200 concurrent requests between them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import ADMIN_KEY, JWT_SECRET, REDIS_URL, delete_prefixed
from tests.processes import Process, start_server, wait_ready
from trellis.runtime import build_runtime
from trellis.settings import Settings
from trellis.storage import migrate

ME = "/api/v1/auth/me"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
BURST = 200


def check_burst(responses: list[httpx.Response], capacity: int, period: int) -> str:
    """Assert exactly ``capacity`` successes, each cell handed out once, and proper 429s."""
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    others = [(r.status_code, r.text[:200]) for r in responses if r.status_code not in (200, 429)]
    assert not others, others
    assert len(ok) == capacity, f"{len(ok)} of {len(responses)} allowed, expected exactly {capacity}"
    assert len(limited) == len(responses) - capacity

    policy = f'"default";q={capacity};w={period}'
    remaining = []
    for response in ok:
        assert response.headers["RateLimit-Policy"] == policy
        rate_limit = response.headers["RateLimit"]
        assert rate_limit.startswith('"default";r=')
        remaining.append(int(rate_limit.split(";r=")[1].split(";")[0]))
    # No cell was handed out twice: the remaining counts are exactly capacity-1 .. 0.
    assert sorted(remaining) == list(range(capacity)), sorted(remaining)

    emission = period // capacity
    for response in limited:
        body = response.json()
        assert body["success"] is False
        assert body["error"]["code"] == "rate_limit_error"
        # Redis uses its own clock, so allow for the time the burst took.
        assert emission - 5 <= int(response.headers["Retry-After"]) <= emission
        assert response.headers["RateLimit-Policy"] == policy
        assert response.headers["RateLimit"].startswith('"default";r=0;t=')
    return f"{len(ok)} allowed, {len(limited)} limited"


@pytest.mark.parametrize("limiter", ["memory", "redis"])
async def test_burst_in_one_process_is_exact(make_harness: Callable[..., Any], redis_prefix: str, limiter: str) -> None:
    capacity, period = 25, 3600
    overrides: dict[str, Any] = {
        "rate_limits": {"admin": {"default": {"capacity": capacity, "period_seconds": period}}}
    }
    if limiter == "redis":
        # The whole burst in flight at once needs more than redis-py's default 100 connections
        # (past them it fails as if Redis were down, and fails open: once 26 of 200 got through).
        overrides.update(redis_url=REDIS_URL, redis_key_prefix=redis_prefix, redis_timeout_seconds=5)
    async with make_harness(**overrides) as h:
        try:
            responses = await asyncio.gather(*(h.client.get(ME, headers=ADMIN) for _ in range(BURST)))
            check_burst(list(responses), capacity, period)
        finally:
            if h.runtime.redis is not None:
                await delete_prefixed(h.runtime.redis, redis_prefix)


# --- two real server processes ---------------------------------------------------------------


@dataclass
class Cluster:
    servers: list[Process]

    def output(self) -> str:
        return "\n".join(server.output() for server in self.servers)


CLUSTER_CAPACITY, CLUSTER_PERIOD = 40, 3600


@pytest.fixture
async def cluster(tmp_path: Path, redis_prefix: str) -> AsyncIterator[Cluster]:
    data_dir = tmp_path / "shared-data"
    rate_limits = f'{{"admin":{{"default":{{"capacity":{CLUSTER_CAPACITY},"period_seconds":{CLUSTER_PERIOD}}}}}}}'
    env = {
        **os.environ,
        "TRELLIS_DATA_DIR": str(data_dir),
        "TRELLIS_REDIS_URL": REDIS_URL,
        "TRELLIS_REDIS_KEY_PREFIX": redis_prefix,
        "TRELLIS_REDIS_TIMEOUT_SECONDS": "5",
        "TRELLIS_JWT_SECRET": JWT_SECRET,
        "TRELLIS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "TRELLIS_RATE_LIMITS": rate_limits,
        "TRELLIS_RATE_LIMIT_FAIL_OPEN": "false",
        "TRELLIS_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }

    # Prepare the shared database once, in-process, so the two servers find it migrated and
    # bootstrapped instead of racing to create it.
    settings = Settings(data_dir=data_dir, jwt_secret=JWT_SECRET, bootstrap_admin_key=ADMIN_KEY, redis_url=None)
    runtime = build_runtime(settings)
    try:
        await migrate.upgrade(runtime.database)
        assert (await runtime.auth.bootstrap_admin()).created
    finally:
        await runtime.close()

    servers: list[Process] = []
    try:
        for index in range(2):
            servers.append(start_server(f"server-{index}", env, tmp_path))
        await asyncio.gather(*(wait_ready(server) for server in servers))
        yield Cluster(servers)
    finally:
        for server in servers:
            server.stop()
        client = Redis.from_url(REDIS_URL)
        try:
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()


async def test_burst_across_two_server_processes_is_exact(cluster: Cluster) -> None:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    clients = [
        httpx.AsyncClient(base_url=server.url, timeout=30.0, limits=limits, headers=ADMIN) for server in cluster.servers
    ]
    try:
        responses = await asyncio.gather(*(clients[i % 2].get(ME) for i in range(BURST)))
        try:
            check_burst(list(responses), CLUSTER_CAPACITY, CLUSTER_PERIOD)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{cluster.output()}") from exc

        # The bucket is shared: both servers now refuse.
        for client in clients:
            after = await client.get(ME)
            assert after.status_code == 429, f"{after.status_code} {after.text}\n{cluster.output()}"
    finally:
        for client in clients:
            await client.aclose()
