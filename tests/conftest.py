"""Shared fixtures: isolated settings, real databases (SQLite file and PostgreSQL), and an app harness.

PostgreSQL tests each get a fresh database on the server at ``TRELLIS_TEST_POSTGRES`` (default
127.0.0.1:5432, the machine's and CI's), dropped afterwards. Redis tests use ``TRELLIS_TEST_REDIS``
with a unique key prefix per test. Neither is mocked and neither is skipped when absent: a missing
service fails the run, loudly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text

from trellis.app import create_app
from trellis.auth.schemas import ApiKeyCreate, Principal, UserCreate
from trellis.cli.common import prepare_embedded
from trellis.kit.clock import ManualClock
from trellis.runtime import Runtime, build_runtime
from trellis.settings import Role, Settings, load_settings
from trellis.storage import migrate
from trellis.storage.database import Database

POSTGRES_SERVER = os.environ.get("TRELLIS_TEST_POSTGRES", "postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TRELLIS_TEST_REDIS", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "trl_test-admin-key-0123456789abcdefghijklmnopqrstuvwxyz"
JWT_SECRET = "test-secret-0123456789-0123456789-0123456789"
# A fixed Fernet key: processes sharing a PostgreSQL database must share the workflow secret keys.
WORKFLOW_SECRET_KEY = "k0GzQ1bUoZqW7m5bX4JYc3o8a9vQe3kq2oH5sQxG9yA="


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's TRELLIS_* variables or trellis.toml."""
    for name in list(os.environ):
        if name.startswith("TRELLIS_") and not name.startswith("TRELLIS_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRELLIS_CONFIG", str(tmp_path / "absent.toml"))


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test; dropped afterwards."""
    name = f"trellis_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"postgresql://{POSTGRES_SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql+asyncpg://{POSTGRES_SERVER}/{name}"
    admin = await asyncpg.connect(f"postgresql://{POSTGRES_SERVER}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass(frozen=True)
class SchemaTemplates:
    """Databases migrated to head once per session: a harness starts from a copy of one.

    Migrating a fresh database costs more than most tests (about 0.4 s on SQLite and 0.8 s on
    PostgreSQL on a quiet 2-core machine, for each of about a thousand harnesses); copying a file
    or ``CREATE DATABASE ... TEMPLATE`` costs a fraction of that. The migrations themselves stay
    tested step by step under ``tests/storage/`` and wherever a test migrates its own database.
    """

    sqlite_file: Path
    postgres_name: str


async def _migrated(url: str) -> None:
    database = Database(url)
    try:
        await migrate.upgrade(database)
    finally:
        await database.dispose()


async def _postgres_admin(statement: str) -> None:
    admin = await asyncpg.connect(f"postgresql://{POSTGRES_SERVER}/postgres")
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def schema_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaTemplates]:
    directory = tmp_path_factory.mktemp("schema-template")
    templates = SchemaTemplates(directory / "trellis.db", f"trellis_template_{uuid.uuid4().hex[:12]}")

    async def build() -> None:
        await _migrated(f"sqlite+aiosqlite:///{templates.sqlite_file}")
        await _postgres_admin(f'CREATE DATABASE "{templates.postgres_name}"')
        await _migrated(f"postgresql+asyncpg://{POSTGRES_SERVER}/{templates.postgres_name}")

    asyncio.run(build())
    yield templates
    asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{templates.postgres_name}" WITH (FORCE)'))


async def _from_template(url: str, templates: SchemaTemplates) -> bool:
    """Fill a new, empty database from the session's template; False when it already has a schema
    (a second harness on a shared database) or is not one this suite made."""
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(templates.sqlite_file, path)
        return True
    name = url.rsplit("/", 1)[1]
    if not name.startswith("trellis_test_"):
        return False
    connection = await asyncpg.connect(f"postgresql://{POSTGRES_SERVER}/{name}")
    try:
        migrated = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        empty = not migrated and not await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public')"
        )
    finally:
        await connection.close()
    if not empty:
        return False
    await _postgres_admin(f'DROP DATABASE "{name}"')
    await _postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{templates.postgres_name}"')
    return True


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run the test once on a SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'trellis.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def redis_prefix() -> str:
    return f"trellis-test:{uuid.uuid4().hex[:10]}:"


async def analyze(database: Database) -> None:
    """PostgreSQL's term statistics come from ANALYZE (autovacuum runs it on a live database, some
    time after a write). Tests of keyword ranking run it after loading their corpus, so the ranking
    does not depend on whether autovacuum has seen it yet, or on statistics left by other data."""
    if database.dialect == "postgresql":
        async with database.transaction() as session:
            await session.execute(text("ANALYZE contexts"))


async def delete_prefixed(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[Redis]:
    """A real client on the test Redis; keys under ``redis_prefix`` are removed afterwards."""
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        try:
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "jwt_secret": JWT_SECRET,
            "bootstrap_admin_key": ADMIN_KEY,
            "log_json": True,
        }
        values.update(overrides)
        values["workflow"] = {"secret_keys": [WORKFLOW_SECRET_KEY], **values.get("workflow", {})}
        # The metric collector and the alert evaluator are background loops: off unless a test asks.
        values["metrics"] = {"collect": False, **values.get("metrics", {})}
        values["alerts"] = {"evaluate": False, **values.get("alerts", {})}
        return Settings(**values)

    return factory


@dataclass
class Harness:
    """A running app (lifespan entered), an HTTP client on it, and ways to make users and keys."""

    app: FastAPI
    runtime: Runtime
    client: httpx.AsyncClient
    clock: ManualClock
    admin: Principal

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def create_user(self, username: str, role: Role = Role.DEVELOPER, password: str | None = None) -> str:
        user = await self.runtime.auth.create_user(
            self.admin, UserCreate(username=username, role=role, password=password)
        )
        return user.id

    async def create_key(self, user_id: str, **fields: Any) -> tuple[str, str]:
        key, plaintext = await self.runtime.auth.create_key(
            self.admin, ApiKeyCreate(name=fields.pop("name", "test"), user_id=user_id, **fields)
        )
        return key.id, plaintext

    async def user_with_key(self, username: str, role: Role = Role.DEVELOPER) -> tuple[str, str]:
        """Returns (user id, API key)."""
        user_id = await self.create_user(username, role)
        _, key = await self.create_key(user_id)
        return user_id, key


@pytest.fixture
def make_harness(make_settings: Callable[..., Settings], schema_templates: SchemaTemplates) -> Callable[..., Any]:
    """``async with make_harness(**settings) as h:`` — migrated, bootstrapped, lifespan running.

    A new database starts as a copy of the session's migrated template (``SchemaTemplates``).

    ``sleep`` and ``jitter`` (not settings) go to the gateway: its backoff waits and random draw.
    """
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def factory(
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        jitter: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Harness]:
        # Wall time starts at the real now (PyJWT checks exp against the real clock); it and the
        # monotonic clock the in-process limiter uses only move when a test says so.
        clock = ManualClock(datetime.now(UTC))
        settings = make_settings(**overrides)
        copied = await _from_template(settings.resolved_database_url, schema_templates)
        app = create_app(settings, clock=clock, sleep=sleep, jitter=jitter)
        runtime: Runtime = app.state.runtime
        if not copied:
            await migrate.upgrade(runtime.database)
        await runtime.auth.bootstrap_admin()
        admin = await runtime.auth.authenticate_api_key(ADMIN_KEY)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://trellis.test") as client:
                yield Harness(app, runtime, client, clock, admin)

    return factory


@pytest.fixture
async def harness(make_harness: Callable[..., Any]) -> AsyncIterator[Harness]:
    """The default harness: embedded SQLite, in-process limiter."""
    async with make_harness() as h:
        yield h


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


# --- a harness per database, and two users' credentials (the API tests' common ground) -------------


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Harness]:
    """The app on each database (``database_url``: SQLite, then PostgreSQL)."""
    async with make_harness(database_url=database_url) as harness:
        yield harness


@pytest.fixture
async def alice(h: Harness) -> dict[str, str]:
    """Headers with a new developer's API key (test modules may define their own ``alice``)."""
    return h.auth((await h.user_with_key("alice"))[1])


@pytest.fixture
async def bob(h: Harness) -> dict[str, str]:
    return h.auth((await h.user_with_key("bob"))[1])


# --- a data directory for CLI commands, as `trellis serve` leaves it --------------------------------


def bootstrap() -> str:
    """What ``trellis serve`` does first on an embedded database: migrate, create the admin, save its key."""

    async def run() -> str | None:
        runtime = build_runtime(load_settings())
        try:
            return await prepare_embedded(runtime)
        finally:
            await runtime.close()

    generated = asyncio.run(run())
    assert generated is not None
    return generated


@pytest.fixture
def cli_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``TRELLIS_DATA_DIR`` for in-process CLI commands: migrated, the admin created, its key saved."""
    path = tmp_path / "data"
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(path))
    monkeypatch.setenv("TRELLIS_CONFIG", str(tmp_path / "nonexistent.toml"))
    bootstrap()
    return path
