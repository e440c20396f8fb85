"""Queries for users and API keys. Functions take the session the service opened."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from trellis.auth.models import ApiKey, User, WsTicket


class KeyCredential(NamedTuple):
    """What authenticating an API key needs, and nothing more."""

    key_id: str
    scopes: list[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    user_id: str
    username: str
    role: str
    disabled: bool


# Built once: this runs on every request made with an API key. Core (not the ORM) and only the
# columns needed: about a third of the per-request CPU of an ORM select of both entities.
_KEY_LOOKUP = (
    select(
        ApiKey.id,
        ApiKey.scopes,
        ApiKey.expires_at,
        ApiKey.revoked_at,
        User.id,
        User.username,
        User.role,
        User.disabled,
    )
    .join(User, ApiKey.owner_id == User.id)
    .where(ApiKey.key_hash == bindparam("key_hash"))
)


class UserState(NamedTuple):
    user_id: str
    username: str
    role: str
    disabled: bool


_USER_LOOKUP = select(User.id, User.username, User.role, User.disabled).where(User.id == bindparam("user_id"))


async def user_state(conn: AsyncConnection, user_id: str) -> UserState | None:
    row = (await conn.execute(_USER_LOOKUP, {"user_id": user_id})).first()
    return None if row is None else UserState(*row)


async def key_credential(conn: AsyncConnection, key_hash: str) -> KeyCredential | None:
    row = (await conn.execute(_KEY_LOOKUP, {"key_hash": key_hash})).first()
    return None if row is None else KeyCredential(*row)


async def key_credential_by_id(conn: AsyncConnection, key_id: str) -> KeyCredential | None:
    """The same as ``key_credential``, by the key's id (checking a credential already accepted)."""
    query = select(*_KEY_LOOKUP.selected_columns).join(User, ApiKey.owner_id == User.id).where(ApiKey.id == key_id)
    row = (await conn.execute(query)).first()
    return None if row is None else KeyCredential(*row)


async def take_ticket(session: AsyncSession, token_hash: str) -> WsTicket | None:
    """Remove the ticket and return what it was, in one statement: a ticket is used once."""
    result = await session.execute(delete(WsTicket).where(WsTicket.token_hash == token_hash).returning(WsTicket))
    return result.scalar_one_or_none()


async def purge_tickets(session: AsyncSession, before: datetime) -> None:
    await session.execute(delete(WsTicket).where(WsTicket.expires_at < before))


async def user_by_id(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def user_by_username(session: AsyncSession, username: str) -> User | None:
    return (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def count_users(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(User))).scalar_one()


async def list_users(session: AsyncSession) -> list[User]:
    return list((await session.execute(select(User).order_by(User.created_at, User.id))).scalars())


async def key_by_id(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def list_keys(session: AsyncSession, owner_id: str | None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if owner_id is not None:
        query = query.where(ApiKey.owner_id == owner_id)
    return list((await session.execute(query)).scalars())
