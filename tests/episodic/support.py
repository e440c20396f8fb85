"""Building call records and reading the episodic log table back, for the log tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from trellis.episodic.models import EpisodicLog
from trellis.episodic.schemas import CallRecord
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
