"""Tables of the raw vector collections (``/api/v1/db/vectors``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, SafeJSON, UTCDateTime


class VectorCollection(Base):
    __tablename__ = "vector_collections"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_vector_collections_owner_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    dimensions: Mapped[int] = mapped_column(Integer)
    # The embedding model used for items given as text and for text queries.
    model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VectorItem(Base):
    __tablename__ = "vector_items"

    collection_id: Mapped[str] = mapped_column(
        ForeignKey("vector_collections.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", SafeJSON, default=dict)
    text: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
