"""Prometheus metrics of workflow runs (labels are bounded: statuses and step types, never workflow
names, which users choose)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)


class WorkflowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "trellis_workflow_runs_total",
            "Runs that ended (succeeded, failed, cancelled) or parked (waiting) in this process.",
            ["status"],
            registry=registry,
        )
        self.steps = Counter(
            "trellis_workflow_steps_total",
            "Step attempts that ended, by step type and outcome (succeeded, failed, skipped, suspended).",
            ["type", "outcome"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "trellis_workflow_step_seconds",
            "Time of one step attempt.",
            ["type"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.active = Gauge(
            "trellis_workflow_runs_active", "Runs this process's worker executes now.", registry=registry
        )
        self.lost = Counter(
            "trellis_workflow_lost_total",
            "Runs this worker let go of because its lease was lost or the database went away.",
            registry=registry,
        )
