"""Queries of the alert tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.alerts.models import AlertEvent, AlertInstance, AlertRule, AlertSilence


async def update_states(
    session: AsyncSession, model: type[AlertRule] | type[AlertInstance], rows: Sequence[dict[str, Any]], *, key: str
) -> None:
    """One executemany of new states by id (Core: the ORM's bulk update cannot bind the key by
    another name). Each row: ``key`` (the id), ``new_state``, ``new_since``, ``new_value``,
    ``new_evaluated``."""
    if not rows:
        return
    table = cast(Table, model.__table__)
    statement = (
        update(table)
        .where(table.c.id == bindparam(key))
        .values(
            state=bindparam("new_state"),
            state_since=bindparam("new_since"),
            value=bindparam("new_value"),
            evaluated_at=bindparam("new_evaluated"),
        )
    )
    await session.execute(statement, list(rows))


async def delete_instances(session: AsyncSession, instance_ids: Sequence[str]) -> None:
    if instance_ids:
        await session.execute(delete(AlertInstance).where(AlertInstance.id.in_(instance_ids)))


async def rule_by_id(session: AsyncSession, rule_id: str) -> AlertRule | None:
    return await session.get(AlertRule, rule_id)


async def rules(session: AsyncSession, owner_id: str | None, *, everyone: bool) -> list[AlertRule]:
    """``everyone``: all rules (administrators); else ``owner_id``'s."""
    query = select(AlertRule).order_by(AlertRule.created_at, AlertRule.id)
    if not everyone:
        query = query.where(AlertRule.owner_id == owner_id)
    return list((await session.execute(query)).scalars())


async def count_owned(session: AsyncSession, owner_id: str) -> int:
    result = await session.execute(select(func.count()).select_from(AlertRule).where(AlertRule.owner_id == owner_id))
    return int(result.scalar() or 0)


async def builtin_names(session: AsyncSession) -> set[str]:
    result = await session.execute(select(AlertRule.builtin).where(AlertRule.builtin.is_not(None)))
    return {name for name in result.scalars() if name}


async def active_silences(session: AsyncSession, rule_ids: Sequence[str], now: datetime) -> list[AlertSilence]:
    """The silences of these rules that have not ended (their matchers are compared by the caller)."""
    if not rule_ids:
        return []
    result = await session.execute(
        select(AlertSilence).where(AlertSilence.rule_id.in_(rule_ids), AlertSilence.ends_at > now)
    )
    return list(result.scalars())


async def instances(session: AsyncSession, rule_ids: Sequence[str], states: Sequence[str] = ()) -> list[AlertInstance]:
    """These rules' instances (all of them, or those in ``states``), in a stable order."""
    if not rule_ids:
        return []
    query = (
        select(AlertInstance)
        .where(AlertInstance.rule_id.in_(rule_ids))
        .order_by(AlertInstance.rule_id, AlertInstance.labels_key)
    )
    if states:
        query = query.where(AlertInstance.state.in_(states))
    return list((await session.execute(query)).scalars())


async def events_page(
    session: AsyncSession,
    *,
    owner_id: str | None,
    everyone: bool,
    rule_id: str | None,
    to_state: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[AlertEvent]:
    query = select(AlertEvent).order_by(AlertEvent.at.desc(), AlertEvent.id.desc()).limit(limit)
    if not everyone:
        query = query.where(AlertEvent.owner_id == owner_id)
    if rule_id is not None:
        query = query.where(AlertEvent.rule_id == rule_id)
    if to_state is not None:
        query = query.where(AlertEvent.to_state == to_state)
    if since is not None:
        query = query.where(AlertEvent.at >= since)
    if until is not None:
        query = query.where(AlertEvent.at < until)
    if after is not None:
        query = query.where(tuple_(AlertEvent.at, AlertEvent.id) < tuple_(after[0], after[1]))
    return list((await session.execute(query)).scalars())


async def pending_notifications(session: AsyncSession, before: datetime, limit: int = 100) -> list[AlertEvent]:
    result = await session.execute(
        select(AlertEvent)
        .where(AlertEvent.notify_status == "pending", AlertEvent.at <= before)
        .order_by(AlertEvent.at)
        .limit(limit)
    )
    return list(result.scalars())


async def record_notification(
    session: AsyncSession, event_id: str, status: str, attempts: int, error: str | None, at: datetime | None
) -> None:
    await session.execute(
        update(AlertEvent)
        .where(AlertEvent.id == event_id)
        .values(notify_status=status, notify_attempts=attempts, notify_error=error, notified_at=at)
    )


async def silences(
    session: AsyncSession, owner_id: str | None, *, everyone: bool, active_at: datetime | None
) -> list[AlertSilence]:
    query = select(AlertSilence).order_by(AlertSilence.created_at.desc(), AlertSilence.id.desc()).limit(500)
    if not everyone:
        query = query.where(AlertSilence.owner_id == owner_id)
    if active_at is not None:
        query = query.where(AlertSilence.ends_at > active_at)
    return list((await session.execute(query)).scalars())


async def delete_events_before(session: AsyncSession, cut: datetime) -> int:
    result = await session.execute(delete(AlertEvent).where(AlertEvent.at < cut))
    return max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
