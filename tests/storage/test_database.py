"""Storage runs the same on a SQLite file and on the real PostgreSQL: migrations, pragmas, atomicity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from trellis.auth.models import ApiKey, User
from trellis.storage import migrate
from trellis.storage.database import Database


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


async def test_migrations_create_schema_and_are_idempotent(database: Database) -> None:
    assert await migrate.current_revision(database) is None
    assert await migrate.upgrade(database) == migrate.head_revision()
    # A second run changes nothing and does not fail.
    assert await migrate.upgrade(database) == migrate.head_revision()
    async with database.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"users", "api_keys", "alembic_version"} <= tables


async def test_downgrade_to_base_removes_tables(database: Database) -> None:
    await migrate.upgrade(database)
    async with database.engine.begin() as conn:
        from alembic import command

        def down(sync_conn: object) -> None:
            config = migrate.alembic_config()
            config.attributes["connection"] = sync_conn
            command.downgrade(config, "base")

        await conn.run_sync(down)
    async with database.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert "users" not in tables


async def test_failed_transaction_leaves_nothing_behind(database: Database) -> None:
    await migrate.upgrade(database)
    now = datetime.now(UTC)
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            session.add(User(id="usr_a", username="alice", role="developer", disabled=False, created_at=now))
            await session.flush()
            raise RuntimeError("boom after a write")
    async with database.session() as session:
        assert (await session.execute(select(User))).scalars().all() == []


async def test_foreign_keys_are_enforced_and_cascade(database: Database) -> None:
    await migrate.upgrade(database)
    now = datetime.now(UTC)
    async with database.transaction() as session:
        session.add(User(id="usr_a", username="alice", role="developer", disabled=False, created_at=now))
        await session.flush()
        session.add(ApiKey(id="key_a", owner_id="usr_a", name="k", prefix="trl_x", key_hash="h" * 64, created_at=now))
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        async with database.transaction() as session:
            session.add(
                ApiKey(id="key_b", owner_id="usr_missing", name="k", prefix="p", key_hash="g" * 64, created_at=now)
            )
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM users WHERE id = 'usr_a'"))
    async with database.session() as session:
        assert (await session.execute(select(ApiKey))).scalars().all() == []


async def test_datetimes_come_back_timezone_aware_utc(database: Database) -> None:
    await migrate.upgrade(database)
    moment = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    async with database.transaction() as session:
        session.add(User(id="usr_t", username="timey", role="viewer", disabled=False, created_at=moment))
    async with database.session() as session:
        user = await session.get(User, "usr_t")
    assert user is not None
    assert user.created_at == moment
    assert user.created_at.tzinfo is not None


async def test_ping(database: Database) -> None:
    await database.ping()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}")
    try:
        async with db.engine.connect() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            foreign = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
        assert journal == "wal"
        assert foreign == 1
        assert busy >= 1000
        assert (tmp_path / "nested" / "dir" / "x.db").exists()
    finally:
        await db.dispose()


async def test_postgres_plans_every_statement_with_its_values(postgres_url: str) -> None:
    """asyncpg prepares statements; a generic plan (made without the values) picks the wrong index for
    search queries, so every PostgreSQL connection asks for custom plans."""
    database = Database(postgres_url)
    try:
        async with database.engine.connect() as conn:
            assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "force_custom_plan"
    finally:
        await database.dispose()


async def test_reader_runs_each_statement_on_its_own_on_postgresql(database: Database) -> None:
    """PostgreSQL readers are autocommit (no BEGIN, no ROLLBACK round trips): each statement gets
    its own transaction id. The connection goes back to the pool transactional again; ordinary
    sessions keep one transaction. On SQLite a reader is an ordinary session that reads."""
    await migrate.upgrade(database)
    now = datetime.now(UTC)
    async with database.transaction() as session:
        session.add(User(id="usr_a", username="alice", role="developer", disabled=False, created_at=now))
    async with database.reader() as session:
        assert (await session.execute(select(User.username))).scalars().all() == ["alice"]
    if database.dialect != "postgresql":
        return
    current = text("SELECT pg_current_xact_id()::text")
    for _ in range(2):  # the second round may reuse the reader's pooled connection
        async with database.reader() as session:
            first, second = [(await session.execute(current)).scalar_one() for _ in range(2)]
        assert first != second
        async with database.session() as session:
            first, second = [(await session.execute(current)).scalar_one() for _ in range(2)]
        assert first == second


async def test_idle_postgresql_connections_are_pinged_and_dead_ones_replaced(postgres_url: str) -> None:
    """A connection that sat in the pool past the idle limit is pinged at checkout; one the server
    cut meanwhile is replaced before any statement fails. A connection in steady use is not pinged."""
    now = [0.0]
    database = Database(postgres_url, idle_ping_seconds=10.0, clock=lambda: now[0])
    pings: list[str] = []
    ping = database.engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append("ping")
        return ping(dbapi_connection)

    database.engine.dialect.do_ping = counted  # type: ignore[method-assign]
    pid = text("SELECT pg_backend_pid()")
    try:
        async with database.reader() as session:
            first = (await session.execute(pid)).scalar_one()
        now[0] = 9.0  # in steady use: no ping
        async with database.reader() as session:
            assert (await session.execute(pid)).scalar_one() == first
        assert pings == []

        admin = Database(postgres_url)
        try:
            async with admin.reader() as session:
                await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        finally:
            await admin.dispose()
        now[0] = 30.0  # idle past the limit: pinged, found dead, replaced
        async with database.reader() as session:
            second = (await session.execute(pid)).scalar_one()
        assert second != first
        assert pings == ["ping"]
    finally:
        await database.dispose()
