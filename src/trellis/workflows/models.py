"""Tables of durable workflows: definitions and their versions, runs, step states, the run's event
log, inbound hooks (with the deliveries seen, for replay protection) and n8n connections.

The database is the source of truth. A run is claimed by a worker with a lease (``lease_owner``,
``due_at`` = when the lease expires) and each claim bumps ``lease_epoch``; every write a worker
makes is conditioned on its epoch, so a worker that lost its lease (it stalled, or the reaper gave
the run to another) cannot overwrite newer work. ``due_at`` is when the run next needs a worker:
now for a queued run, the lease's end for a running one, the wake-up time for a waiting one, NULL
once it has ended (or waits for a hook with no timeout). One index on it finds all due work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, SafeJSON, UTCDateTime


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (
        # One live workflow per name and owner; a deleted one keeps its versions for its runs.
        Index(
            "uq_workflows_owner_name_live",
            "owner_id",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"

    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(SafeJSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"
    __table_args__ = (
        Index("ix_workflow_runs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_workflow_runs_due", "due_at"),
        Index("ix_workflow_runs_parent", "parent_run_id"),
        Index("uq_workflow_runs_owner_idempotency", "owner_id", "idempotency_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(40))
    workflow_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[Any] = mapped_column(SafeJSON)
    result: Mapped[Any] = mapped_column(SafeJSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    current_step: Mapped[str | None] = mapped_column(String(80))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # Who the run acts as (the principal that started it): its steps call the gateway and the
    # context store with this identity.
    principal: Mapped[dict[str, Any]] = mapped_column(SafeJSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_run_id: Mapped[str | None] = mapped_column(String(40))
    parent_step: Mapped[str | None] = mapped_column(String(80))
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkflowStep(Base):
    """The state of one step of a run (a map's elements are ``<id>[<index>]``)."""

    __tablename__ = "workflow_steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts that ended with their worker (killed, lost its lease): retried without spending the
    # step's retry policy, up to [workflow] max_lost_attempts.
    lost: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[Any] = mapped_column(SafeJSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON, nullable=True)
    # A suspended step: what it waits for, and what woke it (a hook's payload, a child run's end).
    suspend: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON, nullable=True)
    resume: Mapped[dict[str, Any] | None] = mapped_column(SafeJSON(none_as_null=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkflowEvent(Base):
    """Append-only: what happened to a run, numbered per run (``seq``, the SSE event id)."""

    __tablename__ = "workflow_events"

    run_id: Mapped[str] = mapped_column(ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    step: Mapped[str | None] = mapped_column(String(80))
    data: Mapped[dict[str, Any]] = mapped_column(SafeJSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class WorkflowHook(Base):
    """An inbound hook: ``start`` runs a workflow with the body as input; ``resume`` wakes a run's
    ``wait`` step. Its secret (for HMAC signatures) is stored encrypted."""

    __tablename__ = "workflow_hooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    workflow_name: Mapped[str | None] = mapped_column(String(128))
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WorkflowHookDelivery(Base):
    """Signatures already accepted, kept past the timestamp tolerance, so a replay is refused."""

    __tablename__ = "workflow_hook_deliveries"

    hook_id: Mapped[str] = mapped_column(ForeignKey("workflow_hooks.id", ondelete="CASCADE"), primary_key=True)
    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class N8nConnection(Base):
    __tablename__ = "n8n_connections"
    __table_args__ = (Index("uq_n8n_connections_owner_name", "owner_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    base_url: Mapped[str] = mapped_column(String(2048))
    api_key: Mapped[str] = mapped_column(Text)  # encrypted (trellis.kit.secretbox)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
