"""Tables of the vector index: one vector per context, and a per-owner epoch bumped by triggers."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base


class ContextEmbedding(Base):
    """One vector per context, for the content version it was computed from."""

    __tablename__ = "context_embeddings"

    context_id: Mapped[str] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40), index=True)
    model: Mapped[str] = mapped_column(String(200))
    dimensions: Mapped[int] = mapped_column(Integer)
    # float32, little-endian: portable, and what numpy reads without copying.
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64))


class ContextVectorEpoch(Base):
    """A counter per owner that triggers bump on every change to their vectors (migration 0004):
    the exact vector index's cache is current while the epoch it was loaded at still is."""

    __tablename__ = "context_vector_epochs"

    owner_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
