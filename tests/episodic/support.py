"""Building call records and reading the episodic log table back, for the log tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from trellis.auth.secrets import ADMIN_KEY_FILE, read_private_file
from trellis.episodic.models import EpisodicLog
from trellis.episodic.schemas import CallRecord, LogFilters, LogOut
from trellis.runtime import build_runtime
from trellis.settings import load_settings
from trellis.storage.database import Database

BASE_TIME = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def record(owner_id: str, **fields: Any) -> CallRecord:
    values: dict[str, Any] = {
        "owner_id": owner_id,
        "door": "rest",
        "requested_model": "smollm2-135m",
        "served_model": "smollm2-135m",
        "provider": "llamacpp",
        "status": "ok",
        "prompt": "Say hello",
        "response": "Hello!",
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "latency_ms": 12.5,
        "finish_reason": "stop",
    }
    values.update(fields)
    return CallRecord(**values)


async def all_rows(database: Database) -> list[EpisodicLog]:
    async with database.session() as session:
        return list((await session.execute(select(EpisodicLog).order_by(EpisodicLog.id))).scalars())


async def count_rows(database: Database) -> int:
    async with database.session() as session:
        return (await session.execute(select(func.count()).select_from(EpisodicLog))).scalar_one()


def logged_calls() -> list[LogOut]:
    """The episodic log of the data directory the environment names (``TRELLIS_DATA_DIR``), read as
    the saved admin key's owner: what a user would see after their CLI commands returned."""

    async def read() -> list[LogOut]:
        runtime = build_runtime(load_settings())
        try:
            key = read_private_file(runtime.settings.data_dir / ADMIN_KEY_FILE)
            assert key is not None
            admin = await runtime.auth.authenticate_api_key(key)
            rows, _ = await runtime.episodic.list(admin, LogFilters(limit=100))
            return [LogOut.model_validate(row) for row in rows]
        finally:
            await runtime.close()

    return asyncio.run(read())
