"""The table of dashboard sessions: what a browser's session cookie stands for."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, SafeJSON, UTCDateTime


class DashboardSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored. The session
    stands for the credential that signed in (an API key with its scopes, or a user who gave their
    password), so it ends when that key is revoked or expires or the user is disabled."""

    __tablename__ = "dashboard_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    via: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(SafeJSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
