"""pgvector: ``embedding`` kept in the row; the HNSW graph over half-precision copies (``halfvec``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

Storage: a row holds two copies of a 384-dimension vector, the portable ``vector`` (bytea) and
``embedding``, about 3 KB, over PostgreSQL's 2 KB TOAST threshold, and the toaster moved
``embedding`` out of line. Every distance computed from a row then fetched it from the TOAST table.
``embedding`` is now kept in the row (``STORAGE MAIN``) and ``vector`` goes out of line uncompressed
(``EXTERNAL``: random floats do not compress), and existing rows are rewritten. At 50,000 rows an
exact scan read 312,658 buffers in 233 ms before and 12,576 in 47 ms after (p50,
``bench/pgvector_layout.py``, bench/README.md). Done for every pgvector version.

Graph, with pgvector >= 0.7: an expression index, ``hnsw ((embedding::halfvec(N))
halfvec_cosine_ops)``, with 0005's build parameters (m = 24, ef_construction = 128). A search walks
the half-size graph and scores the rows it returns from the float32 vectors
(``trellis.context.index.exact``): the index is 40 MiB smaller at 50,000 rows, the walk a few percent
faster, recall unchanged (the same benchmark). Older pgvector keeps the float32 graph.

The graph is dropped before the rewrite and built after it, so the rewrite does not insert every row
into it once more. Without the ``embedding`` column (no pgvector when 0003 ran) nothing changes.
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


def graph_expression(dimensions: int, version: tuple[int, ...]) -> str:
    """What the HNSW index is built over for this pgvector version."""
    if version >= (0, 7):
        return f"((embedding::halfvec({dimensions})) halfvec_cosine_ops)"
    return "(embedding vector_cosine_ops)"


def _embedding_column() -> tuple[int, tuple[int, ...]] | None:
    """The ``embedding`` column's dimensions and pgvector's version, when the column exists."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    version = bind.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar_one_or_none()
    if version is None:
        return None
    typmod = bind.execute(
        sa.text(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'context_embeddings'::regclass "
            "AND attname = 'embedding' AND NOT attisdropped"
        )
    ).scalar_one_or_none()
    if typmod is None or typmod <= 0:
        return None
    return int(typmod), _version(version)


def _rebuild(using: str, *, inline_embeddings: bool = False) -> None:
    # The graph of a large table is built much faster when it fits in memory.
    op.execute("SET LOCAL maintenance_work_mem = '512MB'")
    op.execute("DROP INDEX IF EXISTS ix_context_embeddings_hnsw")
    if inline_embeddings:
        op.execute("ALTER TABLE context_embeddings ALTER COLUMN embedding SET STORAGE MAIN")
        op.execute("ALTER TABLE context_embeddings ALTER COLUMN vector SET STORAGE EXTERNAL")
        # Storage settings apply to values stored from now on: store every row's values again.
        # The cast through real[] builds a new value; an unchanged one would keep its TOAST pointer.
        op.execute(
            "UPDATE context_embeddings SET embedding = embedding::real[]::vector, vector = vector || ''::bytea "
            "WHERE embedding IS NOT NULL"
        )
    op.execute(f"CREATE INDEX ix_context_embeddings_hnsw ON context_embeddings USING hnsw {using} {HNSW_OPTIONS}")


def upgrade() -> None:
    column = _embedding_column()
    if column is not None:
        _rebuild(graph_expression(*column), inline_embeddings=True)


def downgrade() -> None:
    # The storage settings stay: they only make reads cheaper.
    column = _embedding_column()
    if column is not None and column[1] >= (0, 7):
        _rebuild("(embedding vector_cosine_ops)")
