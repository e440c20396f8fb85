"""The episodic log table: one row per model call, owned by the user who made it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, SafeJSON, UTCDateTime


class EpisodicLog(Base):
    __tablename__ = "episodic_logs"
    __table_args__ = (
        # The common query: one user's calls, newest first, keyset-paginated on (created_at, id).
        # Its leading column also serves the owner foreign key (ON DELETE CASCADE lookups).
        Index("ix_episodic_logs_owner_created", "owner_id", "created_at", "id"),
        # Admins listing everyone's calls, and the retention purge.
        Index("ix_episodic_logs_created_at", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    request_id: Mapped[str | None] = mapped_column(String(128))
    door: Mapped[str] = mapped_column(String(16))
    requested_model: Mapped[str] = mapped_column(String(200))
    served_model: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(64))
    prompt: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(SafeJSON)
    response: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer)
    fallback_from: Mapped[str | None] = mapped_column(String(200))
    # The DSPy module that made the call (door "dspy"), else null.
    module: Mapped[str | None] = mapped_column(String(200))
