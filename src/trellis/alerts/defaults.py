"""The built-in rules: error rate, p95 latency, a model's breaker open, log rows dropped, disk space.

The breaker rule has one instance per provider endpoint (``group_by = ["endpoint"]``: each open
breaker fires, and resolves, on its own); the others judge the whole service, as their Prometheus
equivalents do.

They belong to no one (administrators see and manage them), are created once with the thresholds of
``[alerts]``, and can be switched off by an administrator (``PATCH enabled: false``) or by the
operator's settings (``default_rules = false``, ``disabled_rules = [...]``). ``deploy/prometheus/``
holds the same rules for a Prometheus server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trellis.settings import AlertsSettings


@dataclass(frozen=True)
class BuiltinRule:
    builtin: str
    name: str
    description: str
    series: str
    condition: dict[str, Any]
    for_seconds: int
    severity: str
    # As the Prometheus rules in deploy/prometheus group: only the breaker rule is per label set.
    group_by: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"alr_builtin_{self.builtin}"


def builtin_rules(settings: AlertsSettings) -> list[BuiltinRule]:
    return [
        BuiltinRule(
            "error_rate",
            "Error rate",
            f"More than {settings.error_rate_threshold:.0%} of HTTP answers are 5xx over 5 minutes.",
            "http.requests",
            {
                "type": "ratio",
                "numerator": {"status_class": "5xx"},
                "op": ">",
                "value": settings.error_rate_threshold,
                "window_seconds": 300,
                "min_total": 20,
            },
            120,
            "critical",
        ),
        BuiltinRule(
            "p95_latency",
            "p95 latency",
            f"The 95th percentile of HTTP latency is over {settings.p95_latency_seconds:g} s over 5 minutes.",
            "http.latency",
            {"type": "threshold", "fn": "p95", "op": ">", "value": settings.p95_latency_seconds, "window_seconds": 300},
            300,
            "warning",
        ),
        BuiltinRule(
            "breaker_open",
            "Model breaker open",
            "A model provider's circuit breaker is open: calls to it fail fast or go to fallbacks.",
            "breaker.open",
            {"type": "threshold", "fn": "max", "op": ">", "value": 0, "window_seconds": 60},
            0,
            "critical",
            ("endpoint",),
        ),
        BuiltinRule(
            "log_dropped",
            "Log rows dropped",
            "Episodic log rows could not be written in the last 5 minutes.",
            "log.dropped",
            {"type": "threshold", "fn": "increase", "op": ">", "value": 0, "window_seconds": 300},
            0,
            "warning",
        ),
        BuiltinRule(
            "disk_space",
            "Disk space",
            f"Less than {settings.disk_free_ratio:.0%} of the data directory's file system is free.",
            "disk.free_ratio",
            {"type": "threshold", "fn": "last", "op": "<", "value": settings.disk_free_ratio, "window_seconds": 900},
            0,
            "critical",
        ),
    ]


def switched_off(settings: AlertsSettings, builtin: str | None) -> bool:
    """Whether the operator's settings switch this built-in rule off."""
    return builtin is not None and (not settings.default_rules or builtin in settings.disabled_rules)
