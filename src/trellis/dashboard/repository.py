"""Queries for dashboard sessions. Functions take the session the service opened."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.dashboard.models import DashboardSession


async def session_by_hash(session: AsyncSession, token_hash: str) -> DashboardSession | None:
    found = await session.execute(select(DashboardSession).where(DashboardSession.token_hash == token_hash))
    return found.scalar_one_or_none()


async def delete_session(session: AsyncSession, token_hash: str) -> bool:
    result = await session.execute(
        delete(DashboardSession).where(DashboardSession.token_hash == token_hash).returning(DashboardSession.token_hash)
    )
    return result.scalar_one_or_none() is not None


async def purge_sessions(session: AsyncSession, before: datetime) -> None:
    await session.execute(delete(DashboardSession).where(DashboardSession.expires_at < before))
