"""Vector epochs: a per-owner counter that every change to ``context_embeddings`` bumps.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

The exact vector index caches each owner's vectors in memory and must notice changes made by any
process (another replica, the CLI, a cascade delete). Comparing a digest of all the owner's rows
cost a full scan per search (150 ms at 100,000 contexts); reading one counter costs one index
lookup. Triggers keep the counter, so every write path is covered, including the cascades no
application code sees. PostgreSQL uses statement-level triggers with transition tables, so a bulk
upsert bumps each owner once; owners are locked in id order, so concurrent writers cannot deadlock
on the counter rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SQLITE_BUMP = (
    "INSERT INTO context_vector_epochs (owner_id, epoch) VALUES ({row}.owner_id, 1) "
    "ON CONFLICT (owner_id) DO UPDATE SET epoch = epoch + 1;"
)
_SQLITE_TRIGGERS = {
    "context_embeddings_epoch_insert": ("INSERT", ("new",)),
    "context_embeddings_epoch_update": ("UPDATE", ("old", "new")),
    "context_embeddings_epoch_delete": ("DELETE", ("old",)),
}
_PG_FUNCTION = """
CREATE FUNCTION trellis_bump_vector_epochs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO context_vector_epochs (owner_id, epoch)
      SELECT DISTINCT owner_id, 1 FROM changed_new ORDER BY owner_id
      ON CONFLICT (owner_id) DO UPDATE SET epoch = context_vector_epochs.epoch + 1;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO context_vector_epochs (owner_id, epoch)
      SELECT owner_id, 1 FROM (SELECT owner_id FROM changed_old UNION SELECT owner_id FROM changed_new) o
      ORDER BY owner_id
      ON CONFLICT (owner_id) DO UPDATE SET epoch = context_vector_epochs.epoch + 1;
  ELSE
    INSERT INTO context_vector_epochs (owner_id, epoch)
      SELECT DISTINCT owner_id, 1 FROM changed_old ORDER BY owner_id
      ON CONFLICT (owner_id) DO UPDATE SET epoch = context_vector_epochs.epoch + 1;
  END IF;
  RETURN NULL;
END
$$
"""
_PG_TRIGGERS = {
    "context_embeddings_epoch_insert": ("INSERT", "NEW TABLE AS changed_new"),
    "context_embeddings_epoch_update": ("UPDATE", "OLD TABLE AS changed_old NEW TABLE AS changed_new"),
    "context_embeddings_epoch_delete": ("DELETE", "OLD TABLE AS changed_old"),
}


def upgrade() -> None:
    op.create_table(
        "context_vector_epochs",
        sa.Column("owner_id", sa.String(40), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name, (event, rows) in _SQLITE_TRIGGERS.items():
            body = " ".join(_SQLITE_BUMP.format(row=row) for row in rows)
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON context_embeddings BEGIN {body} END")
    elif dialect == "postgresql":
        op.execute(_PG_FUNCTION)
        for name, (event, transition) in _PG_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON context_embeddings REFERENCING {transition} "
                "FOR EACH STATEMENT EXECUTE FUNCTION trellis_bump_vector_epochs()"
            )


def downgrade() -> None:
    for name in _SQLITE_TRIGGERS:
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON context_embeddings")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS trellis_bump_vector_epochs()")
    op.drop_table("context_vector_epochs")
