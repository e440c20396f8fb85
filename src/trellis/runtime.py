"""Builds the backends the settings ask for (database, Redis, limiter, services) and closes them.

This is the only place that chooses between embedded and distributed implementations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from trellis.auth.cache import AuthEpoch, FileAuthEpoch, NoAuthEpoch, RedisAuthEpoch
from trellis.auth.secrets import resolve_jwt_secret
from trellis.auth.service import AuthService
from trellis.kit.clock import Clock, SystemClock
from trellis.ratelimit.base import RateLimiter
from trellis.ratelimit.memory import MemoryRateLimiter
from trellis.ratelimit.redis import RedisRateLimiter
from trellis.settings import Settings
from trellis.storage.database import Database


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    database: Database
    redis: Redis | None
    limiter: RateLimiter
    auth: AuthService

    async def close(self) -> None:
        await self.limiter.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.database.dispose()


def build_redis(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )


def build_auth_epoch(settings: Settings, redis: Redis | None) -> AuthEpoch:
    """Where processes sharing this database learn that access was taken away (see auth/cache.py)."""
    if redis is not None:
        return RedisAuthEpoch(redis, f"{settings.redis_key_prefix}auth:epoch")
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return FileAuthEpoch(Path(f"{url.database}.auth-epoch"))
    return NoAuthEpoch()


def build_runtime(settings: Settings, *, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    # The data directory holds the database, the JWT secret and the admin key: owner-only.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    jwt_secret = resolve_jwt_secret(settings)
    database = Database(settings.resolved_database_url)
    redis = build_redis(settings)
    limiter: RateLimiter
    if redis is not None:
        limiter = RedisRateLimiter(
            redis,
            prefix=f"{settings.redis_key_prefix}rl:",
            timeout_seconds=settings.redis_timeout_seconds,
            fail_open=settings.rate_limit_fail_open,
        )
    else:
        limiter = MemoryRateLimiter(clock)
    auth = AuthService(database, settings, jwt_secret, clock, build_auth_epoch(settings, redis))
    return Runtime(settings, clock, database, redis, limiter, auth)
