"""DSPy: the module behind each model call in the episodic log.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

``episodic_logs.module`` names the DSPy module that made a call (door ``dspy``); null for every
other call, and for every row written before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("episodic_logs") as batch:
        batch.add_column(sa.Column("module", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("episodic_logs") as batch:
        batch.drop_column("module")
