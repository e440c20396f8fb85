"""Durable workflows: definitions with versions, runs, step states, events, hooks, n8n connections.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _owner() -> sa.Column[str]:
    return sa.Column("owner_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(40), primary_key=True),
        _owner(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "uq_workflows_owner_name_live",
        "workflows",
        ["owner_id", "name"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(40), sa.ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        _owner(),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("workflow_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("current_step", sa.String(80), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("principal", sa.JSON(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("parent_run_id", sa.String(40), nullable=True),
        sa.Column("parent_step", sa.String(80), nullable=True),
        sa.Column("lease_owner", sa.String(120), nullable=True),
        sa.Column("lease_epoch", sa.Integer(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_workflow_runs_owner_created", "workflow_runs", ["owner_id", "created_at", "id"])
    op.create_index("ix_workflow_runs_due", "workflow_runs", ["due_at"])
    op.create_index("ix_workflow_runs_parent", "workflow_runs", ["parent_run_id"])
    op.create_index("uq_workflow_runs_owner_idempotency", "workflow_runs", ["owner_id", "idempotency_key"], unique=True)
    op.create_table(
        "workflow_steps",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("lost", sa.Integer(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("suspend", sa.JSON(), nullable=True),
        sa.Column("resume", sa.JSON(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "workflow_events",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("step", sa.String(80), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "workflow_hooks",
        sa.Column("id", sa.String(40), primary_key=True),
        _owner(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("workflow_name", sa.String(128), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_workflow_hooks_owner_id", "workflow_hooks", ["owner_id"])
    op.create_table(
        "workflow_hook_deliveries",
        sa.Column("hook_id", sa.String(40), sa.ForeignKey("workflow_hooks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("signature", sa.String(64), primary_key=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_workflow_hook_deliveries_received_at", "workflow_hook_deliveries", ["received_at"])
    op.create_table(
        "n8n_connections",
        sa.Column("id", sa.String(40), primary_key=True),
        _owner(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("base_url", sa.String(2048), nullable=False),
        sa.Column("api_key", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("uq_n8n_connections_owner_name", "n8n_connections", ["owner_id", "name"], unique=True)


def downgrade() -> None:
    for table in (
        "n8n_connections",
        "workflow_hook_deliveries",
        "workflow_hooks",
        "workflow_events",
        "workflow_steps",
        "workflow_runs",
        "workflow_versions",
        "workflows",
    ):
        op.drop_table(table)
