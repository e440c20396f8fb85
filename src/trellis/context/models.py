"""Tables of the context store's core: contexts and their relationships. The vectors' tables are in
``trellis.context.index.models``.

Search structures that the ORM does not describe live beside these tables and are created by
migration 0003: on SQLite an FTS5 table ``contexts_fts`` (external content, kept in sync by
triggers); on PostgreSQL a generated ``search_vector`` tsvector column with a GIN index, and, when
the pgvector extension is available, an ``embedding vector(384)`` column with an HNSW index on
``context_embeddings`` (see ``trellis.context.index``). ``SEARCH_ONLY_OBJECTS`` names them so
schema comparisons can ignore them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, SafeJSON, UTCDateTime

SEARCH_ONLY_OBJECTS = frozenset(
    {
        "contexts_fts",
        "contexts_fts_data",
        "contexts_fts_idx",
        "contexts_fts_docsize",
        "contexts_fts_config",
        "contexts_fts_content",
        "context_search_text",
        "search_vector",
        "ix_contexts_search_vector",
        "embedding",
        "ix_context_embeddings_hnsw",
    }
)


class Context(Base):
    __tablename__ = "contexts"
    __table_args__ = (
        Index("ix_contexts_owner_type", "owner_id", "type"),
        Index("ix_contexts_owner_source", "owner_id", "source"),
        Index("ix_contexts_owner_created", "owner_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    # "metadata" is reserved by SQLAlchemy's declarative base; the column keeps the API's name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", SafeJSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # For ingested documents and their chunks: where the text came from (a path or name).
    source: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ContextRelationship(Base):
    __tablename__ = "context_relationships"
    __table_args__ = (
        UniqueConstraint("source_id", "target_id", "relationship_type", name="uq_context_relationships_edge"),
        Index("ix_context_relationships_target", "target_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    target_id: Mapped[str] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    relationship_type: Mapped[str] = mapped_column(String(64))
    strength: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
