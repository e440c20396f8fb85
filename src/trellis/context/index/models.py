"""Tables of the vector index: a vector per context and embedding model, a per-owner epoch bumped
by triggers, and the embedding state (the active model and the reindex job)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, UTCDateTime


class ContextEmbedding(Base):
    """A context's vector from one embedding model, for the content version it was computed from.

    Keyed by (context, model) since migration 0015: while a reindex runs, a context has a vector of
    the active model (what searches read) and one of the reindex's target model."""

    __tablename__ = "context_embeddings"

    context_id: Mapped[str] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40), index=True)
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


class EmbeddingState(Base):
    """One row (``id = 'context'``): which model's vectors searches use, and the reindex job.

    ``active_model`` is pinned on first use (the model most stored vectors have, else the configured
    default) and changes only when a reindex completes, in the same statement that ends the job.
    The job: ``status`` (idle, running, done, failed), its target model, progress (``done`` of
    ``total`` contexts; ``cursor``, the last context id in id order whose batch is stored), and a
    lease (``lease_owner`` until ``lease_expires_at``, Unix seconds) so that one process works it
    and another takes over when that one dies."""

    __tablename__ = "context_embedding_state"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    active_model: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    job_id: Mapped[str | None] = mapped_column(String(40))
    target_model: Mapped[str | None] = mapped_column(String(200))
    previous_model: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str | None] = mapped_column(String(40))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer)
    cursor: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
