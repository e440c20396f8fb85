"""pgvector: the HNSW graph over half-precision copies of the vectors (``halfvec``); ``embedding`` inline.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

The index becomes an expression index, ``hnsw ((embedding::halfvec(N)) halfvec_cosine_ops)``, with
0005's build parameters (m = 24, ef_construction = 128). The table keeps its float32 ``embedding``
column: a search walks the half-size graph and scores the rows it returns from the float32 vectors
(``trellis.context.vectors``). Half-size index tuples mean half the pages a walk touches, half the
memory the graph needs to stay cached, and cheaper distances. Needs pgvector 0.7 (``halfvec``); on
older versions, and without the ``embedding`` column, nothing changes.

Storage: a row holds two copies of a 384-dimension vector, the portable ``vector`` (bytea) and
``embedding``, about 3 KB, over PostgreSQL's 2 KB TOAST threshold, and the toaster moved
``embedding`` out of line. Every distance computed from a row then fetched it from the TOAST table
(three buffer reads, twice per row: score and sort): an exact scan of 1,000 rows read 6,250 buffers
in 7.8 ms. ``embedding`` is now kept in the row (``STORAGE MAIN``) and ``vector`` goes out of line
uncompressed (``EXTERNAL``: random floats do not compress), and existing rows are rewritten: the
same scan reads 250 buffers in 1.2 ms. The graph is dropped before the rewrite and built after it,
so the rewrite does not insert every row into it once more.
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
    dimensions = _embedding_dimensions()
    if dimensions is not None:
        _rebuild(f"((embedding::halfvec({dimensions})) halfvec_cosine_ops)", inline_embeddings=True)


def downgrade() -> None:
    # The storage settings stay: they only make reads cheaper.
    if _embedding_dimensions() is not None:
        _rebuild("(embedding vector_cosine_ops)")
