"""Request and response models of the alerts API (every door: REST, CLI, the dashboard)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trellis.alerts.models import AlertEvent, AlertInstance, AlertRule, AlertSilence
from trellis.kit.pagination import Page
from trellis.kit.requests import RequestModel

Op = Literal[">", ">=", "<", "<="]
Severity = Literal["info", "warning", "critical"]
AlertState = Literal["inactive", "pending", "firing", "resolved"]
NotifyStatus = Literal["none", "pending", "sent", "failed", "silenced"]
Window = Annotated[int, Field(ge=10, le=7 * 86_400, description="Seconds of history the condition reads.")]
Labels = Annotated[dict[str, Annotated[str, Field(max_length=200)]], Field(max_length=10)]
GroupBy = Annotated[
    list[Annotated[str, Field(max_length=64)]],
    Field(
        max_length=10,
        description="The labels whose values tell the rule's instances apart (each label set has its own "
        "state). Default: every label of the series its filters do not fix, for threshold and rate "
        "conditions; none (one instance for the whole rule) for ratio and absence conditions.",
    ),
]
MAX_PAGE = 200
STATE_RANK = {"inactive": 0, "resolved": 1, "pending": 2, "firing": 3}


class _Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdCondition(_Condition):
    """The series' value over the window compared with ``value``: a counter's increase, a gauge's
    last/max/min/avg, a histogram's p50..p99/avg/count (``fn``, the series' default if omitted)."""

    type: Literal["threshold"]
    fn: str | None = Field(default=None, max_length=16)
    op: Op
    value: float
    window_seconds: Window = 300


class RateCondition(_Condition):
    """A counter's (or histogram's observations') increase per second over the window."""

    type: Literal["rate"]
    op: Op
    value: float
    window_seconds: Window = 300


class RatioCondition(_Condition):
    """A counter's increase where ``numerator`` labels also match, divided by its whole increase
    (e.g. 5xx answers / all answers). Not evaluated (no alert) while the whole is below ``min_total``."""

    type: Literal["ratio"]
    numerator: Labels = Field(min_length=1)
    op: Op
    value: float
    window_seconds: Window = 300
    min_total: float = Field(default=1.0, ge=0)


class AbsenceCondition(_Condition):
    """No sample of the series (matching the labels) within the window."""

    type: Literal["absence"]
    window_seconds: Window = 300


Condition = Annotated[
    ThresholdCondition | RateCondition | RatioCondition | AbsenceCondition, Field(discriminator="type")
]


class AlertRuleCreate(RequestModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str | None, Field(max_length=2000)] = None
    series: Annotated[str, Field(min_length=1, max_length=64)]
    labels: Labels = Field(default_factory=dict)
    user_id: Annotated[
        str | None, Field(max_length=40, description="Usage series, administrators: whose usage (default: all users).")
    ] = None
    condition: Condition
    group_by: GroupBy | None = None
    for_seconds: Annotated[int, Field(ge=0, le=7 * 86_400)] = 0
    severity: Severity = "warning"
    enabled: bool = True
    webhook_url: Annotated[str | None, Field(max_length=2000)] = None


class AlertRuleUpdate(RequestModel):
    """Fields to change; ``webhook_url: null`` removes the webhook."""

    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    description: Annotated[str | None, Field(max_length=2000)] = None
    labels: Labels | None = None
    condition: Condition | None = None
    group_by: GroupBy | None = None
    for_seconds: Annotated[int | None, Field(ge=0, le=7 * 86_400)] = None
    severity: Severity | None = None
    enabled: bool | None = None
    webhook_url: Annotated[str | None, Field(max_length=2000)] = None


class AlertInstanceOut(BaseModel):
    """One label set of a rule with its own state (pending, firing, or resolved a short while ago)."""

    id: str
    rule_id: str
    labels: dict[str, str] = Field(description="The rule's filters and the grouped labels' values.")
    state: AlertState
    state_since: datetime
    value: float | None
    evaluated_at: datetime
    silenced_until: datetime | None = Field(description="The end of the longest active silence covering it.")

    @classmethod
    def of(cls, row: AlertInstance, *, silenced_until: datetime | None) -> AlertInstanceOut:
        return cls(
            id=row.id,
            rule_id=row.rule_id,
            labels=dict(row.labels),
            state=row.state,
            state_since=row.state_since,
            value=row.value,
            evaluated_at=row.evaluated_at,
            silenced_until=silenced_until,
        )


class AlertOut(AlertInstanceOut):
    """An alert now (``GET /api/v1/alerts``): an instance with enough of its rule to read it alone."""

    rule_name: str
    severity: Severity
    series: str
    builtin: str | None


class AlertRuleOut(BaseModel):
    id: str
    name: str
    description: str | None
    owner_id: str | None = Field(description="None for a built-in rule.")
    builtin: str | None = Field(description="The built-in rule's name (error_rate, p95_latency, ...), else None.")
    series: str
    labels: dict[str, str]
    group_by: list[str]
    user_id: str | None
    condition: dict[str, Any]
    for_seconds: int
    severity: Severity
    enabled: bool = Field(description="False when switched off (by its owner, or by the operator's settings).")
    webhook_url: str | None
    state: AlertState = Field(description="The most urgent state of its instances (firing, pending, resolved).")
    state_since: datetime
    value: float | None = Field(description="The value of an instance in that state at the last evaluation.")
    evaluated_at: datetime | None
    silenced_until: datetime | None = Field(
        description="The end of the longest active silence of the whole rule (silences with matchers: see instances)."
    )
    instances: list[AlertInstanceOut] = Field(description="Its label sets that are pending, firing or resolved.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(
        cls,
        row: AlertRule,
        *,
        enabled: bool,
        silenced_until: datetime | None,
        instances: list[AlertInstanceOut],
    ) -> AlertRuleOut:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            owner_id=row.owner_id,
            builtin=row.builtin,
            series=row.series,
            labels=dict(row.labels),
            group_by=list(row.group_by or []),
            user_id=row.user_id,
            condition=dict(row.condition),
            for_seconds=row.for_seconds,
            severity=row.severity,
            enabled=enabled,
            webhook_url=row.webhook_url,
            state=row.state,
            state_since=row.state_since,
            value=row.value,
            evaluated_at=row.evaluated_at,
            silenced_until=silenced_until,
            instances=instances,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class AlertRuleCreated(AlertRuleOut):
    webhook_secret: str | None = Field(
        description="The key deliveries are signed with (HMAC-SHA256): shown once, when a webhook is set."
    )


class NotificationOut(BaseModel):
    status: NotifyStatus
    attempts: int
    last_error: str | None
    delivered_at: datetime | None


class AlertEventOut(BaseModel):
    id: str
    rule_id: str
    rule_name: str
    severity: Severity
    owner_id: str | None
    labels: dict[str, str] = Field(description="The instance's label set.")
    from_state: AlertState
    to_state: AlertState
    at: datetime
    value: float | None
    message: str
    notification: NotificationOut

    @classmethod
    def of(cls, row: AlertEvent) -> AlertEventOut:
        return cls(
            id=row.id,
            rule_id=row.rule_id,
            rule_name=row.rule_name,
            severity=row.severity,
            owner_id=row.owner_id,
            labels=dict(row.labels or {}),
            from_state=row.from_state,
            to_state=row.to_state,
            at=row.at,
            value=row.value,
            message=row.message,
            notification=NotificationOut(
                status=row.notify_status,
                attempts=row.notify_attempts,
                last_error=row.notify_error,
                delivered_at=row.notified_at,
            ),
        )


class AlertEventPage(Page[AlertEventOut]):
    pass


class EventFilters(BaseModel):
    rule_id: str | None = None
    to_state: AlertState | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


class SilenceCreate(RequestModel):
    rule_id: Annotated[str, Field(min_length=1, max_length=40)]
    matchers: Labels = Field(
        default_factory=dict,
        description="Only the rule's instances whose labels include these (default: every instance).",
    )
    ends_at: datetime | None = Field(default=None, description="When the silence ends (or give duration_seconds).")
    duration_seconds: Annotated[int | None, Field(ge=1, le=366 * 86_400)] = None
    comment: Annotated[str | None, Field(max_length=500)] = None


class SilenceOut(BaseModel):
    id: str
    rule_id: str
    matchers: dict[str, str]
    owner_id: str | None
    created_by: str
    ends_at: datetime
    comment: str | None
    created_at: datetime
    active: bool

    @classmethod
    def of(cls, row: AlertSilence, now: datetime) -> SilenceOut:
        return cls(
            id=row.id,
            rule_id=row.rule_id,
            matchers=dict(row.matchers or {}),
            owner_id=row.owner_id,
            created_by=row.created_by,
            ends_at=row.ends_at,
            comment=row.comment,
            created_at=row.created_at,
            active=row.ends_at > now,
        )
