"""DSPy programs: datasets of labelled examples, programs, and their signed compiled versions.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

Three tables (``trellis.dspy.models``): ``dspy_datasets`` (a user's examples for one module),
``dspy_programs`` (a named use of a module, with the deployed version) and
``dspy_program_versions`` (the compiled state as signed canonical JSON text and its HMAC tag).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dspy_datasets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("module", sa.String(200), nullable=False),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_dspy_datasets_owner_name"),
    )
    op.create_index("ix_dspy_datasets_owner_id", "dspy_datasets", ["owner_id"])
    op.create_table(
        "dspy_programs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("module", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("deployed_version", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_dspy_programs_owner_name"),
    )
    op.create_index("ix_dspy_programs_owner_id", "dspy_programs", ["owner_id"])
    op.create_table(
        "dspy_program_versions",
        sa.Column("program_id", sa.String(40), sa.ForeignKey("dspy_programs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("dataset_id", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_dspy_program_versions_dataset_id", "dspy_program_versions", ["dataset_id"])


def downgrade() -> None:
    op.drop_table("dspy_program_versions")
    op.drop_table("dspy_programs")
    op.drop_table("dspy_datasets")
