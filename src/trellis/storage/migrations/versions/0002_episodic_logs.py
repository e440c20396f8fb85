"""Episodic logs: one row per model call.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "episodic_logs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("door", sa.String(16), nullable=False),
        sa.Column("requested_model", sa.String(200), nullable=False),
        sa.Column("served_model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("messages", sa.JSON(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finish_reason", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fallback_from", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_episodic_logs_owner_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_episodic_logs"),
    )
    op.create_index("ix_episodic_logs_owner_created", "episodic_logs", ["owner_id", "created_at", "id"])
    op.create_index("ix_episodic_logs_created_at", "episodic_logs", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_episodic_logs_created_at", table_name="episodic_logs")
    op.drop_index("ix_episodic_logs_owner_created", table_name="episodic_logs")
    op.drop_table("episodic_logs")
