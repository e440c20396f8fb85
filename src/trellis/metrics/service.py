"""What the metric doors call. ``SystemMetricsService``: a snapshot of this process's own Prometheus
registry, as a few summed numbers (``GET /api/v1/metrics/system``, GraphQL's ``systemMetrics``).
``MetricsService``: the history every replica writes (``GET /api/v1/db/metrics``, the CLI), which
also hands out the snapshot, so every door reads metrics through it.

The registry is the one the runtime builds and every component records into (HTTP edge, gateway,
workflows); ``/metrics`` serves it raw for Prometheus. Counters here are this process's since it
started: across replicas, sum them in Prometheus, not here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from trellis import __version__
from trellis.auth.schemas import Principal
from trellis.kit.clock import Clock, as_utc
from trellis.kit.errors import Location, NotFound, PermissionDenied, ValidationFailed
from trellis.metrics import history
from trellis.metrics import repository as repo
from trellis.metrics.catalog import BY_NAME, SERIES, SeriesDef
from trellis.metrics.collector import MetricsCollector
from trellis.metrics.schemas import (
    BreakerState,
    CollectorGap,
    CollectorStatusOut,
    HttpTotals,
    MetricQuery,
    MetricSeriesOut,
    ModelTotals,
    SeriesInfo,
    SystemMetricsOut,
    WorkflowTotals,
)
from trellis.settings import MetricsSettings
from trellis.storage.database import Database

Labels = Mapping[str, str]


class _Samples:
    """One collection of the registry, indexed by sample name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._by_name: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for family in registry.collect():
            for sample in family.samples:
                self._by_name[sample.name].append((sample.labels, sample.value))

    def total(self, name: str, where: Callable[[Labels], bool] = lambda labels: True) -> int:
        return int(sum(value for labels, value in self._by_name.get(name, ()) if where(labels)))

    def by(self, name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for labels, value in self._by_name.get(name, ()):
            out[labels.get(label, "")] += int(value)
        return dict(sorted(out.items()))

    def rows(self, name: str) -> list[tuple[Labels, float]]:
        return list(self._by_name.get(name, ()))


def _status(labels: Labels) -> int:
    try:
        return int(labels.get("status", "0"))
    except ValueError:
        return 0


class SystemMetricsService:
    def __init__(self, registry: CollectorRegistry, clock: Clock) -> None:
        self._registry = registry
        self._clock = clock
        self._started = clock.monotonic()

    def snapshot(self) -> SystemMetricsOut:
        samples = _Samples(self._registry)
        prompt = samples.total("trellis_gateway_tokens_total", lambda labels: labels.get("kind") == "prompt")
        completion = samples.total("trellis_gateway_tokens_total", lambda labels: labels.get("kind") == "completion")
        cache = samples.by("trellis_gateway_cache_total", "result")
        return SystemMetricsOut(
            timestamp=self._clock.now(),
            version=__version__,
            uptime_seconds=round(max(0.0, self._clock.monotonic() - self._started), 3),
            http=HttpTotals(
                requests=samples.total("trellis_http_requests_total"),
                client_errors=samples.total("trellis_http_requests_total", lambda lb: 400 <= _status(lb) < 500),
                server_errors=samples.total("trellis_http_requests_total", lambda lb: _status(lb) >= 500),
                rate_limited=samples.total("trellis_http_requests_total", lambda lb: _status(lb) == 429),
            ),
            models=ModelTotals(
                calls=samples.total("trellis_gateway_requests_total"),
                errors=samples.total("trellis_gateway_requests_total", lambda lb: lb.get("status") == "error"),
                cancelled=samples.total("trellis_gateway_requests_total", lambda lb: lb.get("status") == "cancelled"),
                prompt_tokens=prompt,
                completion_tokens=completion,
                tokens=prompt + completion,
                cache_hits=cache.get("hit_l1", 0) + cache.get("hit_l2", 0),
                cache_misses=cache.get("miss", 0),
                fallbacks=samples.total("trellis_gateway_fallbacks_total"),
                retries=samples.total("trellis_gateway_retries_total"),
                log_rows_dropped=samples.total("trellis_episodic_log_dropped_total"),
            ),
            breakers=[
                BreakerState(endpoint=labels.get("endpoint", ""), open=value > 0)
                for labels, value in sorted(
                    samples.rows("trellis_gateway_breaker_open"), key=lambda row: row[0].get("endpoint", "")
                )
            ],
            workflows=WorkflowTotals(
                active_runs=samples.total("trellis_workflow_runs_active"),
                runs_ended=samples.by("trellis_workflow_runs_total", "status"),
                steps=samples.total("trellis_workflow_steps_total"),
                runs_lost=samples.total("trellis_workflow_lost_total"),
            ),
        )


# --- the metric history: what GET /api/v1/db/metrics, GraphQL and the CLI call ----------------------

DEFAULT_RANGE_SECONDS = 3600
DEFAULT_POINTS = 120
NICE_STEPS = (10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _query_error(field: str, message: str, **details: Any) -> ValidationFailed:
    return ValidationFailed.of(field, message, location="query", **details)


class MetricsService:
    """Reads the history every replica writes; who may read what: usage series (tokens, cost, calls)
    of a user are that user's and administrators'; system series are administrators' only."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: MetricsSettings,
        system: SystemMetricsService,
        collector: MetricsCollector | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self.settings = settings
        self.system = system
        self.collector = collector

    def snapshot(self) -> SystemMetricsOut:
        """This process's counters at a glance (GET /api/v1/metrics/system, GraphQL systemMetrics)."""
        return self.system.snapshot()

    def catalogue(self, actor: Principal) -> list[SeriesInfo]:
        return [
            SeriesInfo(
                name=s.name,
                kind=s.kind,
                unit=s.unit,
                scope=s.scope,
                description=s.description,
                labels=list(s.labels),
                fns=[s.default_fn, *[fn for fn in s.fns if fn != s.default_fn]],
            )
            for s in SERIES
            if actor.is_admin or s.scope == "usage"
        ]

    def definition(
        self, actor: Principal, name: str, *, field: str = "series", location: Location = "query"
    ) -> SeriesDef:
        """The series ``name``, if ``actor`` may read it (unknown: 400; a system series for a
        non-administrator: 403)."""
        found = BY_NAME.get(name)
        if found is None:
            known = ", ".join(s.name for s in SERIES if actor.is_admin or s.scope == "usage")
            raise ValidationFailed.of(
                field, f"unknown series {name[:100]!r}; known: {known}", location=location, type="unknown_series"
            )
        if found.scope == "system" and not actor.is_admin:
            raise PermissionDenied(
                f"{name} is a system series: administrators only "
                "(your usage series: usage.calls, usage.tokens, usage.cost)",
                details={"series": name},
            )
        return found

    def owner_filter(self, actor: Principal, series: SeriesDef, user_id: str | None) -> str | None:
        """Which owner's series to read: "" (system), a user id, or None (every user's, summed)."""
        if series.scope == "system":
            if user_id is not None:
                raise _query_error("user_id", f"{series.name} is a system series: it has no user", type="value_error")
            return repo.SYSTEM_OWNER
        if actor.is_admin:
            return user_id
        if user_id is not None and user_id != actor.user_id:
            raise NotFound("no usage for that user", details={"user_id": user_id})
        return actor.user_id

    async def query(self, actor: Principal, query: MetricQuery) -> MetricSeriesOut:
        series = self.definition(actor, query.series)
        owner = self.owner_filter(actor, series, query.user_id)
        fn = query.fn or series.default_fn
        if fn not in series.fns:
            raise _query_error("fn", f"{series.name} is a {series.kind}: fn is one of {', '.join(series.fns)}")
        for name in [*query.labels, *query.group_by]:
            if name not in series.labels:
                field = "label" if name in query.labels else "group_by"
                allowed = ", ".join(series.labels) or "none"
                raise _query_error(field, f"{series.name} has no label {name[:64]!r} (its labels: {allowed})")
        plan_range = self._range(query)
        async with self._db.reader() as session:
            rows = await repo.series_of(session, series.name, owner)
            lines, line_labels = history.group_lines(rows, query.labels, query.group_by)
            if not line_labels:
                line_labels = [{}] if not query.group_by else []
            plan = self._plan(series, fn, plan_range, query.step, lines, line_labels)
            out_lines = await history.run(session, plan)
        instances = {row.instance for row in rows if row.id in lines}
        return MetricSeriesOut(
            series=series.name,
            kind=series.kind,
            unit=series.unit,
            scope=series.scope,
            fn=fn,
            since=datetime.fromtimestamp(plan.since, UTC),
            until=datetime.fromtimestamp(plan.until, UTC),
            step=plan.step,
            resolution=plan.resolution,
            instances=len(instances),
            lines=out_lines,
        )

    def _range(self, query: MetricQuery) -> tuple[int, int]:
        now = self._clock.now()
        until = as_utc(query.until) if query.until is not None else now
        since = as_utc(query.since) if query.since is not None else until - timedelta(seconds=DEFAULT_RANGE_SECONDS)
        if since >= until:
            raise _query_error("since", "since must be earlier than until")
        return int(since.timestamp()), math.ceil(until.timestamp())

    def retention(self) -> dict[int, int]:
        """Seconds each stored resolution is kept."""
        s = self.settings
        return {
            s.interval_seconds: s.raw_retention_hours * 3600,
            60: s.minute_retention_days * 86_400,
            3600: s.hour_retention_days * 86_400,
        }

    def _plan(
        self,
        series: SeriesDef,
        fn: str,
        span: tuple[int, int],
        step: int | None,
        lines: dict[int, int],
        line_labels: list[dict[str, str]],
    ) -> history.Plan:
        since, until = span
        interval = self.settings.interval_seconds
        max_points = self.settings.max_points
        seconds = until - since
        if step is None:
            wanted = max(interval, math.ceil(seconds / DEFAULT_POINTS))
            step = next((nice for nice in NICE_STEPS if nice >= wanted and nice % interval == 0), None)
            if step is None:
                step = math.ceil(wanted / 86_400) * 86_400
        elif step < interval:
            raise _query_error("step", f"step must be at least the sampling interval, {interval} s", min_step=interval)
        points = math.ceil(seconds / step)
        if points > max_points:
            min_step = math.ceil(seconds / max_points)
            raise _query_error(
                "step",
                f"a step of {step} s over {seconds} s gives {points} points; the maximum is {max_points}: "
                f"use a step of at least {min_step} s",
                max_points=max_points,
                min_step=min_step,
            )
        oldest = int(self._clock.now().timestamp()) - since
        keep = self.retention()
        resolutions = sorted(keep)
        covering = [r for r in resolutions if keep[r] >= oldest] or [resolutions[-1]]
        fitting = [r for r in covering if r <= step and step % r == 0]
        resolution = fitting[-1] if fitting else covering[0]
        if resolution > step:
            step = resolution
        start = since // step * step
        end = -(-until // step) * step
        stale = self.settings.gauge_heartbeat_seconds + resolution + interval
        segments = self._segments(resolution, start, end)
        return history.Plan(series, fn, start, end, step, resolution, segments, lines, line_labels, stale)

    def _segments(self, resolution: int, start: int, end: int) -> list[tuple[int, int, int]]:
        """Read ``resolution`` up to its last written roll-up period, then each finer one (the
        collector writes a period's roll-up with the first sample after it ends)."""
        interval = self.settings.interval_seconds
        now = int(self._clock.now().timestamp())
        segments = []
        cursor = start
        for res in sorted((r for r in self.retention() if r <= resolution), reverse=True):
            boundary = end if res == interval else (now - 2 * interval) // res * res
            stop = min(end, boundary)
            if stop > cursor:
                segments.append((res, cursor, stop))
                cursor = stop
        return segments or [(resolution, start, end)]

    def collector_status(self) -> CollectorStatusOut:
        collector = self.collector
        if collector is None:
            return CollectorStatusOut(
                enabled=False,
                running=False,
                instance="",
                interval_seconds=self.settings.interval_seconds,
                samples=0,
                rows_written=0,
                skipped=0,
                last_sample_at=None,
                last_duration_ms=None,
                last_gap=None,
                errors=0,
            )
        stats = collector.stats
        gap = None
        if stats.last_gap is not None:
            gap = CollectorGap(since=stats.last_gap[0], until=stats.last_gap[1], intervals=stats.last_gap[2])
        return CollectorStatusOut(
            enabled=self.settings.collect,
            running=collector.running,
            instance=collector.instance,
            interval_seconds=collector.interval,
            samples=stats.samples,
            rows_written=stats.rows_written,
            skipped=stats.skipped,
            last_sample_at=stats.last_sample_at,
            last_duration_ms=stats.last_duration_ms,
            last_gap=gap,
            errors=stats.errors,
        )
