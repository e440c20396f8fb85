"""The 0002 migration: creates exactly what the model declares, goes back down, and cascades."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tests.episodic.support import BASE_TIME, count_rows, record
from trellis.auth.models import User
from trellis.context.models import SEARCH_ONLY_OBJECTS
from trellis.episodic.writer import EpisodicLogWriter
from trellis.kit.clock import ManualClock
from trellis.storage import migrate
from trellis.storage.database import Database
from trellis.storage.models import Base


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


def _not_search_only(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    # Full-text and pgvector structures are created by migration 0003 outside the ORM models.
    return name not in SEARCH_ONLY_OBJECTS


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": _not_search_only})
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(database: Database) -> None:
    await migrate.upgrade(database)
    assert await migrate.current_revision(database) == migrate.head_revision()
    async with database.engine.connect() as conn:
        differences = await conn.run_sync(_differences)
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("episodic_logs"))
        foreign_keys = await conn.run_sync(lambda sync: inspect(sync).get_foreign_keys("episodic_logs"))
    assert differences == []
    assert {ix["name"]: ix["column_names"] for ix in indexes} == {
        "ix_episodic_logs_owner_created": ["owner_id", "created_at", "id"],
        "ix_episodic_logs_created_at": ["created_at", "id"],
    }
    [fk] = foreign_keys
    assert fk["referred_table"] == "users"
    assert fk["options"].get("ondelete") == "CASCADE"


async def test_downgrade_removes_only_the_log_table(database: Database) -> None:
    await migrate.upgrade(database)

    def down(sync_conn: Connection) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = sync_conn
        command.downgrade(config, "0001")

    async with database.engine.begin() as conn:
        await conn.run_sync(down)
    async with database.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert "episodic_logs" not in tables
    assert {"users", "api_keys"} <= tables
    assert await migrate.upgrade(database) == migrate.head_revision()


async def test_deleting_a_user_deletes_their_logs(database: Database) -> None:
    await migrate.upgrade(database)
    async with database.transaction() as session:
        session.add(User(id="usr_gone", username="gone", role="developer", disabled=False, created_at=BASE_TIME))
        session.add(User(id="usr_stays", username="stays", role="developer", disabled=False, created_at=BASE_TIME))
    writer = EpisodicLogWriter(database, ManualClock(BASE_TIME))
    for owner in ("usr_gone", "usr_gone", "usr_stays"):
        writer.submit(record(owner))
    await writer.flush()
    assert await count_rows(database) == 3
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM users WHERE id = 'usr_gone'"))
    assert await count_rows(database) == 1
