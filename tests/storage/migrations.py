"""What the migration tests share: move a harness's database to a revision, and raw SQL on it."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tests.conftest import Harness
from trellis.storage import migrate


async def migrate_to(h: Harness, revision: str, *, down: bool) -> None:
    """Alembic's downgrade (``down``) or upgrade to ``revision``, on the harness's own engine."""

    def run(sync_conn: Connection) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = sync_conn
        (command.downgrade if down else command.upgrade)(config, revision)

    async with h.runtime.database.engine.begin() as conn:
        await conn.run_sync(run)


async def rows(h: Harness, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with h.runtime.database.transaction() as session:
        return [tuple(row) for row in (await session.execute(text(sql), params)).all()]


async def execute(h: Harness, sql: str, **params: Any) -> None:
    async with h.runtime.database.transaction() as session:
        await session.execute(text(sql), params)
