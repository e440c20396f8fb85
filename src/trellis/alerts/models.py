"""Alert tables: rules (with a summary of their instances' states), their instances (one state per
label set), the history of state changes (each with its label set and its notification's outcome),
and silences (of a whole rule, or of the instances whose labels match)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, SafeJSON, UTCDateTime


class AlertRule(Base):
    __tablename__ = "alert_rules"
    __table_args__ = (Index("ix_alert_rules_owner_created", "owner_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # None for the built-in rules (administrators manage them).
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    builtin: Mapped[str | None] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    series: Mapped[str] = mapped_column(String(64))
    labels: Mapped[dict[str, str]] = mapped_column(SafeJSON())
    # The labels whose values tell instances apart ([]: one instance for the whole rule).
    group_by: Mapped[list[str]] = mapped_column(SafeJSON(), server_default=text("'[]'"))
    # Usage series: whose usage is watched (None: every user's, summed; administrators only).
    user_id: Mapped[str | None] = mapped_column(String(40))
    condition: Mapped[dict[str, Any]] = mapped_column(SafeJSON())
    for_seconds: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # Encrypted (the workflow secret box): it signs, so it cannot be a hash.
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    # The evaluator's summary of the instances: the most urgent state (firing, pending, resolved,
    # inactive), since when, and the value of an instance in that state.
    state: Mapped[str] = mapped_column(String(16))
    state_since: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float | None] = mapped_column(Float)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertInstance(Base):
    """One label set of a rule that is pending, firing or resolved (an inactive one has no row)."""

    __tablename__ = "alert_instances"
    __table_args__ = (Index("ix_alert_instances_rule_labels", "rule_id", "labels_key", unique=True),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    # The labels as canonical JSON (sorted keys): the instance's identity within its rule.
    labels_key: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, str]] = mapped_column(SafeJSON())
    state: Mapped[str] = mapped_column(String(16))
    state_since: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float | None] = mapped_column(Float)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertEvent(Base):
    __tablename__ = "alert_events"
    __table_args__ = (
        Index("ix_alert_events_owner_at", "owner_id", "at", "id"),
        Index("ix_alert_events_rule_at", "rule_id", "at", "id"),
        Index("ix_alert_events_at", "at", "id"),
        Index("ix_alert_events_notify_status", "notify_status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    owner_id: Mapped[str | None] = mapped_column(String(40))
    rule_name: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    # The instance's label set.
    labels: Mapped[dict[str, str]] = mapped_column(SafeJSON(), server_default=text("'{}'"))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    # none (nothing to notify), pending, sent, failed, silenced
    notify_status: Mapped[str] = mapped_column(String(16))
    notify_attempts: Mapped[int] = mapped_column(Integer)
    notify_error: Mapped[str | None] = mapped_column(Text)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AlertSilence(Base):
    __tablename__ = "alert_silences"
    __table_args__ = (Index("ix_alert_silences_rule_ends", "rule_id", "ends_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    # The rule's owner (None: a built-in rule), so listing is one indexed filter.
    owner_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_by: Mapped[str] = mapped_column(String(40))
    # Only the instances whose labels include these ({}: every instance of the rule).
    matchers: Mapped[dict[str, str]] = mapped_column(SafeJSON(), server_default=text("'{}'"))
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
