"""WebSocket tickets: single-use, short-lived credentials for ``/ws?ticket=...``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

A browser cannot set headers on a WebSocket handshake, and a credential in a URL ends up in logs;
so a client trades its credential for a ticket (``POST /api/v1/ws/ticket``) that works once, for
seconds. Tickets live in the database so that any replica can take one issued by another; using
one is a single ``DELETE ... RETURNING``, so it cannot be used twice. Only a hash is stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trellis.storage.base import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ws_tickets",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=True),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("credential_expires_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_ws_tickets_expires_at", "ws_tickets", ["expires_at"])


def downgrade() -> None:
    op.drop_table("ws_tickets")
