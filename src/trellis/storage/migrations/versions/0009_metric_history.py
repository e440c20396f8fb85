"""Metric history: series, samples and histograms per resolution, and the monitoring leases.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Samples are keyed ``(series_id, resolution, ts)``; on SQLite the sample tables are ``WITHOUT
ROWID`` (the key is the row: no rowid and no second index), which is most of why a month of
history stays small. Retention deletes whole old ranges through that key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _key() -> list[sa.Column[object]]:
    return [
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.SmallInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "metric_series",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("labels", sa.String(512), nullable=False),
        sa.Column("instance", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("uq_metric_series_key", "metric_series", ["name", "owner_id", "labels", "instance"], unique=True)
    op.create_table(
        "metric_samples",
        *_key(),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "resolution", "ts", name="pk_metric_samples"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "metric_histograms",
        *_key(),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        *[sa.Column(f"b{i}", sa.Integer(), nullable=True) for i in range(16)],
        sa.PrimaryKeyConstraint("series_id", "resolution", "ts", name="pk_metric_histograms"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "monitor_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(120), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_leases")
    op.drop_table("metric_histograms")
    op.drop_table("metric_samples")
    op.drop_index("uq_metric_series_key", table_name="metric_series")
    op.drop_table("metric_series")
