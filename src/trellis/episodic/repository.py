"""Queries over the episodic log. Functions take the session the service opened."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, String, Text, cast, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.episodic.models import EpisodicLog
from trellis.storage.base import UTCDateTime


@dataclass(frozen=True, slots=True)
class LogQuery:
    """A page request with every value already checked."""

    owner_id: str | None  # None: everyone's (admins)
    model: str | None
    status: str | None
    door: str | None
    since: datetime | None
    until: datetime | None
    # LIKE patterns (wildcards in the user's text already escaped with backslash).
    text_pattern: str | None
    json_pattern: str | None
    limit: int
    after: tuple[datetime, str] | None


LIKE_ESCAPE = "\\"


def like_contains(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with its own % _ and \\ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _page_query(query: LogQuery) -> Select[EpisodicLog]:
    statement = select(EpisodicLog)
    if query.owner_id is not None:
        statement = statement.where(EpisodicLog.owner_id == query.owner_id)
    if query.model is not None:
        statement = statement.where(
            or_(EpisodicLog.requested_model == query.model, EpisodicLog.served_model == query.model)
        )
    if query.status is not None:
        statement = statement.where(EpisodicLog.status == query.status)
    if query.door is not None:
        statement = statement.where(EpisodicLog.door == query.door)
    if query.since is not None:
        statement = statement.where(EpisodicLog.created_at >= query.since)
    if query.until is not None:
        statement = statement.where(EpisodicLog.created_at < query.until)
    if query.text_pattern is not None and query.json_pattern is not None:
        statement = statement.where(
            or_(
                EpisodicLog.prompt.ilike(query.text_pattern, escape=LIKE_ESCAPE),
                EpisodicLog.response.ilike(query.text_pattern, escape=LIKE_ESCAPE),
                cast(EpisodicLog.messages, Text).ilike(query.json_pattern, escape=LIKE_ESCAPE),
            )
        )
    if query.after is not None:
        created_at, log_id = query.after
        # Row-value comparison: PostgreSQL walks the (owner_id, created_at, id) index with it.
        statement = statement.where(
            tuple_(EpisodicLog.created_at, EpisodicLog.id)
            < tuple_(literal(created_at, UTCDateTime()), literal(log_id, String()))
        )
    return statement.order_by(EpisodicLog.created_at.desc(), EpisodicLog.id.desc()).limit(query.limit)


async def page(session: AsyncSession, query: LogQuery) -> list[EpisodicLog]:
    return list((await session.execute(_page_query(query))).scalars())


async def log_by_id(session: AsyncSession, log_id: str) -> EpisodicLog | None:
    return await session.get(EpisodicLog, log_id)
