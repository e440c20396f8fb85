"""What ``SystemMetricsService.snapshot`` answers: the process's own counters, summed into a few
numbers a person (or a dashboard) reads at a glance. Every door shapes it the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from trellis.kit.errors import ValidationFailed


class HttpTotals(BaseModel):
    requests: int = Field(description="HTTP requests answered by this process (every route, GraphQL included).")
    client_errors: int = Field(description="Answers with a 4xx status.")
    server_errors: int = Field(description="Answers with a 5xx status.")
    rate_limited: int = Field(description="Answers with 429.")


class ModelTotals(BaseModel):
    calls: int = Field(description="Model calls the gateway answered or failed, every door included.")
    errors: int = Field(description="Model calls that ended in an error.")
    cancelled: int = Field(description="Model calls whose client went away.")
    prompt_tokens: int
    completion_tokens: int
    tokens: int = Field(description="prompt_tokens + completion_tokens.")
    cache_hits: int = Field(description="Completions and embeddings answered from the cache (L1 or L2).")
    cache_misses: int
    fallbacks: int = Field(description="Calls served by a fallback model.")
    retries: int = Field(description="Provider calls retried.")
    log_rows_dropped: int = Field(description="Episodic log rows that could not be written.")


class BreakerState(BaseModel):
    endpoint: str = Field(description="provider:base URL (or model id).")
    open: bool = Field(description="True while the breaker is open or half-open.")


class WorkflowTotals(BaseModel):
    active_runs: int = Field(description="Runs this process's worker executes now.")
    runs_ended: dict[str, int] = Field(description="Runs that ended (or parked) in this process, by status.")
    steps: int = Field(description="Step attempts that ended in this process.")
    runs_lost: int = Field(description="Runs let go of because a lease was lost.")


class SystemMetricsOut(BaseModel):
    timestamp: datetime
    version: str
    uptime_seconds: float
    http: HttpTotals
    models: ModelTotals
    breakers: list[BreakerState]
    workflows: WorkflowTotals


# --- metric history: GET /api/v1/db/metrics and friends -------------------------------------------

SeriesKind = Literal["counter", "gauge", "histogram"]
SeriesScope = Literal["system", "usage"]


class MetricQuery(BaseModel):
    """What every door asks the history for (REST query parameters, the CLI's options)."""

    series: str = Field(description="A series name from GET /api/v1/db/metrics/series, e.g. http.requests.")
    labels: dict[str, str] = Field(default_factory=dict, description="Only series with these label values.")
    group_by: list[str] = Field(default_factory=list, description="One line per value of these labels.")
    user_id: str | None = Field(
        default=None, description="Usage series: this user's (yours by default; admins: anyone's, or all summed)."
    )
    since: datetime | None = Field(default=None, description="Start (default: until minus one hour).")
    until: datetime | None = Field(default=None, description="End (default: now).")
    step: int | None = Field(default=None, description="Seconds per point (default: about 120 points).")
    fn: str | None = Field(
        default=None,
        description="counter: increase|rate; gauge: last|max|min|avg; histogram: p50|p90|p95|p99|avg|count|rate.",
    )


def parse_labels(raw: list[str]) -> dict[str, str]:
    """``name:value`` pairs (the ``label`` query parameter, the CLI's ``--label``)."""
    labels: dict[str, str] = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name:
            raise ValidationFailed.of("label", f"{item[:100]!r} is not name:value", location="query")
        if name in labels:
            raise ValidationFailed.of("label", f"label {name[:64]!r} is given twice", location="query")
        labels[name] = value
    return labels


def split_names(raw: list[str]) -> list[str]:
    return [name for item in raw for name in item.split(",") if name]


class MetricSummary(BaseModel):
    """A line's numbers over the whole range."""

    current: float | None = Field(description="The last point's value.")
    total: float | None = Field(description="Counters: the increase over the range; histograms: observations.")
    rate: float | None = Field(description="Counters and histograms: per second over the range.")
    avg: float | None = Field(description="Histograms: the mean observation; gauges: the mean of the points.")
    min: float | None = Field(description="The smallest point.")
    max: float | None = Field(description="The largest point.")
    p50: float | None = Field(description="Histograms: the median over the range (from merged buckets).")
    p95: float | None
    p99: float | None


class MetricLine(BaseModel):
    labels: dict[str, str] = Field(description="The group_by labels of this line ({} when not grouped).")
    points: list[tuple[int, float | None]] = Field(
        description="[unix seconds of the step's start, value]; null where nothing was recorded (gauges, quantiles)."
    )
    summary: MetricSummary


class MetricSeriesOut(BaseModel):
    series: str
    kind: SeriesKind
    unit: str
    scope: SeriesScope
    fn: str
    since: datetime
    until: datetime
    step: int = Field(description="Seconds per point.")
    resolution: int = Field(description="Seconds per stored sample read (10 raw, 60, 3600).")
    instances: int = Field(description="Replicas whose samples were combined.")
    lines: list[MetricLine]


class SeriesInfo(BaseModel):
    name: str
    kind: SeriesKind
    unit: str
    scope: SeriesScope
    description: str
    labels: list[str]
    fns: list[str] = Field(description="Values of fn this series takes; the first is the default.")


class CollectorGap(BaseModel):
    since: datetime
    until: datetime
    intervals: int = Field(description="Sampling intervals skipped.")


class CollectorStatusOut(BaseModel):
    enabled: bool
    running: bool
    instance: str
    interval_seconds: int
    samples: int = Field(description="Samples taken by this process.")
    rows_written: int
    skipped: int = Field(description="Intervals skipped because the collector fell behind.")
    last_sample_at: datetime | None
    last_duration_ms: float | None = Field(description="Time the last sample took (collect + write).")
    last_gap: CollectorGap | None
    errors: int = Field(description="Samples whose write failed (their increases are kept for the next).")
