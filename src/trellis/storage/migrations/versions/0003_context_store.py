"""Context store: contexts, relationships, embeddings, vector collections, full-text search.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Full text: SQLite gets an FTS5 external-content table synced by triggers; PostgreSQL a generated
tsvector column with a GIN index. Vectors: on PostgreSQL with the pgvector extension available,
``context_embeddings.embedding vector(384)`` with an HNSW index (cosine); without it (for
example the stock PostgreSQL 15 of Debian bookworm) vectors stay in the portable float32 column
and are searched exactly in-process.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PGVECTOR_DIMENSIONS = 384


def upgrade() -> None:
    op.create_table(
        "contexts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(1024), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_contexts_owner_type", "contexts", ["owner_id", "type"])
    op.create_index("ix_contexts_owner_source", "contexts", ["owner_id", "source"])
    op.create_index("ix_contexts_owner_created", "contexts", ["owner_id", "created_at"])
    op.create_table(
        "context_relationships",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source_id", sa.String(40), sa.ForeignKey("contexts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("target_id", sa.String(40), sa.ForeignKey("contexts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("relationship_type", sa.String(64), nullable=False),
        sa.Column("strength", sa.Float(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("source_id", "target_id", "relationship_type", name="uq_context_relationships_edge"),
    )
    op.create_index("ix_context_relationships_target", "context_relationships", ["target_id"])
    op.create_index("ix_context_relationships_owner_id", "context_relationships", ["owner_id"])
    op.create_table(
        "context_embeddings",
        sa.Column("context_id", sa.String(40), sa.ForeignKey("contexts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_context_embeddings_owner_id", "context_embeddings", ["owner_id"])
    op.create_table(
        "vector_collections",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_vector_collections_owner_name"),
    )
    op.create_index("ix_vector_collections_owner_id", "vector_collections", ["owner_id"])
    op.create_table(
        "vector_items",
        sa.Column(
            "collection_id",
            sa.String(40),
            sa.ForeignKey("vector_collections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("item_id", sa.String(200), primary_key=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )

    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE contexts_fts USING fts5("
            "type, content, content='contexts', content_rowid='rowid', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER contexts_fts_insert AFTER INSERT ON contexts BEGIN "
            "INSERT INTO contexts_fts(rowid, type, content) VALUES (new.rowid, new.type, new.content); END"
        )
        op.execute(
            "CREATE TRIGGER contexts_fts_delete AFTER DELETE ON contexts BEGIN "
            "INSERT INTO contexts_fts(contexts_fts, rowid, type, content) "
            "VALUES ('delete', old.rowid, old.type, old.content); END"
        )
        op.execute(
            "CREATE TRIGGER contexts_fts_update AFTER UPDATE ON contexts BEGIN "
            "INSERT INTO contexts_fts(contexts_fts, rowid, type, content) "
            "VALUES ('delete', old.rowid, old.type, old.content); "
            "INSERT INTO contexts_fts(rowid, type, content) VALUES (new.rowid, new.type, new.content); END"
        )
    elif bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE contexts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', type || ' ' || content)) STORED"
        )
        op.execute("CREATE INDEX ix_contexts_search_vector ON contexts USING gin (search_vector)")
        available = bind.execute(
            sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar_one()
        if available:
            op.execute("CREATE EXTENSION IF NOT EXISTS vector")
            op.execute(f"ALTER TABLE context_embeddings ADD COLUMN embedding vector({PGVECTOR_DIMENSIONS})")
            op.execute(
                "CREATE INDEX ix_context_embeddings_hnsw ON context_embeddings USING hnsw (embedding vector_cosine_ops)"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("contexts_fts_insert", "contexts_fts_delete", "contexts_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS contexts_fts")
    op.drop_table("vector_items")
    op.drop_table("vector_collections")
    op.drop_table("context_embeddings")
    op.drop_table("context_relationships")
    op.drop_table("contexts")
