"""Dashboard sessions: what a browser's session cookie stands for.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

A row per signed-in browser, keyed by the SHA-256 of the cookie's random token (the token itself
is never stored), naming the user, the API key it signed in with (if any) and its scopes. Deleting
the row signs the browser out on every replica.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=True),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_dashboard_sessions_user_id", "dashboard_sessions", ["user_id"])
    op.create_index("ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("dashboard_sessions")
