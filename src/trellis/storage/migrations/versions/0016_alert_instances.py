"""Alerts: one state per label set (alert instances), as Prometheus keeps its alerts.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03

``alert_instances`` holds each label set of a rule that is pending, firing or resolved;
``alert_rules.group_by`` names the labels that tell a rule's instances apart; ``alert_events``
carries the instance's labels and ``alert_silences`` optional label matchers.

Rules written before keep their meaning: their ``group_by`` is ``[]`` (one instance for the whole
rule, labelled by the rule's filters) and a rule that was pending, firing or resolved becomes that
one instance, with the same state and since. The built-in ``breaker_open`` rule groups by
``endpoint`` from now on (as the Prometheus rule does): its old whole-rule instance, if any, is no
longer in the data at the next evaluation and resolves, and each open endpoint fires on its own.
Old events get their rule's filter labels.

Going down, the rules' columns already hold the summary of their instances, so only the new table
and columns go. Columns are added and dropped with ``ALTER TABLE`` (SQLite 3.35+), never by
rebuilding ``alert_rules``: dropping a parent table on SQLite would cascade to its events.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alert_rules", sa.Column("group_by", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
    op.add_column("alert_events", sa.Column("labels", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    op.add_column("alert_silences", sa.Column("matchers", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    op.create_table(
        "alert_instances",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column(
            "rule_id",
            sa.String(40),
            sa.ForeignKey("alert_rules.id", ondelete="CASCADE", name="fk_alert_instances_rule_id_alert_rules"),
            nullable=False,
        ),
        sa.Column("labels_key", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_since", UTCDateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("evaluated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_instances"),
    )
    op.create_index("ix_alert_instances_rule_labels", "alert_instances", ["rule_id", "labels_key"], unique=True)

    bind = op.get_bind()
    op.execute("UPDATE alert_rules SET group_by = '[\"endpoint\"]' WHERE builtin = 'breaker_open'")
    rules = bind.execute(
        sa.text("SELECT id, labels FROM alert_rules WHERE state IN ('pending', 'firing', 'resolved')")
    ).all()
    rows = []
    for rule_id, labels in rules:
        parsed = json.loads(labels) if isinstance(labels, str) else dict(labels or {})
        # Not a random id: the migration gives the same answer on every run.
        key = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        rows.append({"id": f"ali_{rule_id}"[:40], "rule": rule_id, "key": key})
    if rows:
        # The state columns are copied by the database itself: no datetime goes through Python here.
        bind.execute(
            sa.text(
                "INSERT INTO alert_instances (id, rule_id, labels_key, labels, state, state_since, value, "
                "evaluated_at) SELECT :id, id, :key, labels, state, state_since, value, "
                "COALESCE(evaluated_at, state_since) FROM alert_rules WHERE id = :rule"
            ),
            rows,
        )
    op.execute(
        "UPDATE alert_events SET labels = (SELECT alert_rules.labels FROM alert_rules "
        "WHERE alert_rules.id = alert_events.rule_id)"
    )


def downgrade() -> None:
    op.drop_index("ix_alert_instances_rule_labels", table_name="alert_instances")
    op.drop_table("alert_instances")
    op.drop_column("alert_silences", "matchers")
    op.drop_column("alert_events", "labels")
    op.drop_column("alert_rules", "group_by")
