"""pgvector: rebuild the HNSW index with m = 24, ef_construction = 128.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

With pgvector's defaults (m = 16, ef_construction = 64) recall@10 at 100,000 contexts of
all-MiniLM-L6-v2 vectors was 0.867 at ef_search 100 (bench/context_store.py). Built denser, the
same benchmark measured 0.932 at ef_search 100, 0.959 at 200 (the service's default since) and
0.977 at 400; bench/README.md has the run. Building costs about twice as long. Only PostgreSQL
with the ``embedding`` column (pgvector available when 0003 ran) is touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

HNSW_M = 24
HNSW_EF_CONSTRUCTION = 128


def _has_embedding_column() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    found = bind.execute(
        sa.text(
            "SELECT 1 FROM pg_attribute WHERE attrelid = 'context_embeddings'::regclass "
            "AND attname = 'embedding' AND NOT attisdropped"
        )
    ).scalar_one_or_none()
    return found is not None


def _rebuild(options: str) -> None:
    # The graph of a large table is built much faster when it fits in memory.
    op.execute("SET LOCAL maintenance_work_mem = '512MB'")
    op.execute("DROP INDEX IF EXISTS ix_context_embeddings_hnsw")
    op.execute(
        "CREATE INDEX ix_context_embeddings_hnsw ON context_embeddings "
        f"USING hnsw (embedding vector_cosine_ops){options}"
    )


def upgrade() -> None:
    if _has_embedding_column():
        _rebuild(f" WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")


def downgrade() -> None:
    if _has_embedding_column():
        _rebuild("")
