"""``[alerts]``: the alert evaluator (one replica at a time), its webhooks, and the built-in rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

BuiltinRule = Literal["error_rate", "p95_latency", "breaker_open", "log_dropped", "disk_space"]


class AlertsSettings(BaseModel):
    """Alerts (``[alerts]`` in trellis.toml, ``TRELLIS_ALERTS__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Evaluate rules in this process (`trellis serve`, `trellis worker`): replicas share the work
    # through a lease in the database, so exactly one evaluates at a time.
    evaluate: bool = True
    evaluate_seconds: Annotated[float, Field(ge=1, le=3600)] = 15.0
    # A replica that stops renewing its lease for this long is replaced by another.
    lease_seconds: Annotated[float, Field(ge=3, le=3600)] = 45.0
    # Rules per owner.
    max_rules_per_owner: Annotated[int, Field(ge=1, le=10_000)] = 100
    # Built-in rules (owned by no one, managed by administrators). Listed names are switched off
    # whatever the database says; `default_rules = false` switches them all off.
    default_rules: bool = True
    disabled_rules: list[BuiltinRule] = Field(default_factory=list)
    # The built-in rules' thresholds (used when they are first created).
    error_rate_threshold: Annotated[float, Field(gt=0, le=1)] = 0.05
    p95_latency_seconds: Annotated[float, Field(gt=0)] = 2.5
    disk_free_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.05
    # Where the built-in rules notify (signed like every webhook): an n8n Webhook node, a chat bridge.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # Webhook delivery: attempts (the first included), backoff doubling from `webhook_backoff_seconds`
    # up to `webhook_max_backoff_seconds`, and each attempt's timeout.
    webhook_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    webhook_backoff_seconds: Annotated[float, Field(ge=0, le=600)] = 1.0
    webhook_max_backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    # A resolved alert instance (one label set of a rule) is shown this long, then forgotten (its
    # events stay); the rule's state goes back to inactive when none of its instances is left.
    resolved_keep_seconds: Annotated[int, Field(ge=0, le=30 * 86_400)] = 900
    # Alert events older than this are deleted.
    events_retention_days: Annotated[int, Field(ge=1, le=3660)] = 90
