"""Changing the embedding model safely: a vector per (context, model), and the embedding state.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

``context_embeddings`` was keyed by context alone, so changing the embedding model re-embedded in
place and, until every context was done, one ranking held vectors of two models. It is now keyed by
(context, model): a reindex writes the target model's vectors beside the active model's, searches
read only the active model's, and the switch is one update of ``context_embedding_state`` (one
row: the active model and the reindex job; see ``trellis.context.index.reindex``). The active model
starts as the model most existing vectors have (NULL on an empty store: pinned to the configured
default on first use).

SQLite cannot change a primary key: the table is rebuilt (same columns, same rows) and its index
and the vector-epoch triggers of migration 0004 are created again. PostgreSQL swaps the constraint
in place; the pgvector column, its HNSW index and the statement triggers stay.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# Migration 0004's triggers, as they are there.
_SQLITE_BUMP = (
    "INSERT INTO context_vector_epochs (owner_id, epoch) VALUES ({row}.owner_id, 1) "
    "ON CONFLICT (owner_id) DO UPDATE SET epoch = epoch + 1;"
)
_SQLITE_TRIGGERS = {
    "context_embeddings_epoch_insert": ("INSERT", ("new",)),
    "context_embeddings_epoch_update": ("UPDATE", ("old", "new")),
    "context_embeddings_epoch_delete": ("DELETE", ("old",)),
}
_COLUMNS = "context_id, owner_id, model, dimensions, vector, content_hash"


def _rebuild_sqlite(primary_key: tuple[str, ...]) -> None:
    op.create_table(
        "context_embeddings_rebuilt",
        sa.Column(
            "context_id",
            sa.String(40),
            sa.ForeignKey("contexts.id", ondelete="CASCADE", name="fk_context_embeddings_context_id_contexts"),
            nullable=False,
        ),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint(*primary_key, name="pk_context_embeddings"),
    )
    op.execute(f"INSERT INTO context_embeddings_rebuilt ({_COLUMNS}) SELECT {_COLUMNS} FROM context_embeddings")  # noqa: S608 - constants
    op.execute("DROP TABLE context_embeddings")  # its index and triggers go with it
    op.execute("ALTER TABLE context_embeddings_rebuilt RENAME TO context_embeddings")
    op.create_index("ix_context_embeddings_owner_id", "context_embeddings", ["owner_id"])
    for name, (event, which) in _SQLITE_TRIGGERS.items():
        body = " ".join(_SQLITE_BUMP.format(row=row) for row in which)
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON context_embeddings BEGIN {body} END")


def _swap_pg_primary_key(columns: str) -> None:
    name = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'context_embeddings'::regclass AND contype = 'p'"
            )
        )
        .scalar_one()
    )
    op.execute(
        f'ALTER TABLE context_embeddings DROP CONSTRAINT "{name}", ADD CONSTRAINT "{name}" PRIMARY KEY ({columns})'
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(("context_id", "model"))
    else:
        _swap_pg_primary_key("context_id, model")
    op.create_table(
        "context_embedding_state",
        sa.Column("id", sa.String(20), primary_key=True),
        sa.Column("active_model", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("target_model", sa.String(200), nullable=True),
        sa.Column("previous_model", sa.String(200), nullable=True),
        sa.Column("requested_by", sa.String(40), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.String(40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.execute(
        "INSERT INTO context_embedding_state (id, active_model, status, total, done) SELECT 'context', "
        "(SELECT model FROM context_embeddings GROUP BY model ORDER BY count(*) DESC, model LIMIT 1), 'idle', 0, 0"
    )


def downgrade() -> None:
    # One vector per context again: the active model's where there is one, else any.
    active = "(SELECT coalesce(active_model, '') FROM context_embedding_state WHERE id = 'context')"
    op.execute(
        "DELETE FROM context_embeddings WHERE EXISTS (SELECT 1 FROM context_embeddings o "  # noqa: S608 - constants
        "WHERE o.context_id = context_embeddings.context_id AND o.model <> context_embeddings.model "
        f"AND (o.model = {active} OR (context_embeddings.model <> {active} AND o.model < context_embeddings.model)))"
    )
    op.drop_table("context_embedding_state")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(("context_id",))
    else:
        _swap_pg_primary_key("context_id")
