"""pgvector: the HNSW graph over half-precision copies of the vectors (``halfvec``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

The index becomes an expression index, ``hnsw ((embedding::halfvec(N)) halfvec_cosine_ops)``, with
0005's build parameters (m = 24, ef_construction = 128). The table keeps its float32 ``embedding``
column: a search walks the half-size graph and scores the rows it returns from the float32 vectors
(``trellis.context.vectors``). Half-size index tuples mean half the pages a walk touches, half the
memory the graph needs to stay cached, and cheaper distances. Needs pgvector 0.7 (``halfvec``); on
older versions, and without the ``embedding`` column, nothing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HNSW_OPTIONS = "WITH (m = 24, ef_construction = 128)"  # 0005's, measured there


def _version(text: str) -> tuple[int, ...]:
    return tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in text.split("."))


def _embedding_dimensions() -> int | None:
    """The ``embedding`` column's dimensions when pgvector >= 0.7 is installed in the database."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    version = bind.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar_one_or_none()
    if version is None or _version(version) < (0, 7):
        return None
    typmod = bind.execute(
        sa.text(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'context_embeddings'::regclass "
            "AND attname = 'embedding' AND NOT attisdropped"
        )
    ).scalar_one_or_none()
    return int(typmod) if typmod is not None and typmod > 0 else None


def _rebuild(using: str) -> None:
    # The graph of a large table is built much faster when it fits in memory.
    op.execute("SET LOCAL maintenance_work_mem = '512MB'")
    op.execute("DROP INDEX IF EXISTS ix_context_embeddings_hnsw")
    op.execute(f"CREATE INDEX ix_context_embeddings_hnsw ON context_embeddings USING hnsw {using} {HNSW_OPTIONS}")


def upgrade() -> None:
    dimensions = _embedding_dimensions()
    if dimensions is not None:
        _rebuild(f"((embedding::halfvec({dimensions})) halfvec_cosine_ops)")


def downgrade() -> None:
    if _embedding_dimensions() is not None:
        _rebuild("(embedding vector_cosine_ops)")
