"""The query engine of the metric history: stored rows → lines of points and their summaries.

Counters are summed (over replicas, label sets and time); histograms merge their buckets and only
then compute percentiles (``quantile``, Prometheus's ``histogram_quantile`` interpolation), never
averaging percentiles; gauges carry their last value forward until it goes stale, then combine
across replicas as their series says (sum, max, min).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from trellis.metrics import repository as repo
from trellis.metrics.catalog import QUANTILES, TOTAL_LABELS, SeriesDef
from trellis.metrics.repository import SeriesRow
from trellis.metrics.schemas import MetricLine, MetricSummary


def quantile(bounds: Sequence[float], counts: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of observations counted per bucket (``counts[i]`` in ``(bounds[i-1],
    bounds[i]]``, the last bucket +Inf), interpolated linearly inside its bucket. None without data."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count <= 0:
            continue
        if seen + count >= rank:
            if i >= len(bounds):  # the +Inf bucket: the largest finite bound is all we know
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i]
            return lower + (upper - lower) * max(0.0, rank - seen) / count
        seen += count
    return bounds[-1] if bounds else None


@dataclass(frozen=True)
class Plan:
    """What one query reads: the range (aligned to the step), the resolution and the lines."""

    series: SeriesDef
    fn: str
    since: int
    until: int
    step: int
    resolution: int
    # (resolution, since, until): the range read from each stored resolution. Roll-ups of the
    # period in progress are not written yet, so its tail comes from the finer resolutions.
    segments: Sequence[tuple[int, int, int]]
    # series id -> line number; line number -> its labels
    lines: Mapping[int, int]
    line_labels: Sequence[dict[str, str]]
    stale_seconds: int

    @property
    def starts(self) -> range:
        return range(self.since, self.until, self.step)


def group_lines(
    rows: Sequence[SeriesRow], labels: Mapping[str, str], group_by: Sequence[str]
) -> tuple[dict[int, int], list[dict[str, str]]]:
    """Series matching ``labels``, mapped to one line per value of the ``group_by`` labels. With
    neither, the total series (one per replica) where the collector wrote them."""
    lines: dict[int, int] = {}
    keys: dict[tuple[str, ...], int] = {}
    line_labels: list[dict[str, str]] = []
    totals = [row for row in rows if row.labels == TOTAL_LABELS]
    if not labels and not group_by and totals:
        return {row.id: 0 for row in totals}, [{}]
    for row in rows:
        if row.labels == TOTAL_LABELS:
            continue
        parsed: dict[str, str] = json.loads(row.labels)
        if any(parsed.get(name) != value for name, value in labels.items()):
            continue
        key = tuple(parsed.get(name, "") for name in group_by)
        line = keys.get(key)
        if line is None:
            line = keys[key] = len(line_labels)
            line_labels.append(dict(zip(group_by, key, strict=True)))
        lines[row.id] = line
    return lines, line_labels


async def run(session: AsyncSession, plan: Plan) -> list[MetricLine]:
    kind = plan.series.kind
    if kind == "counter":
        return await _counters(session, plan)
    if kind == "histogram":
        return await _histograms(session, plan)
    return await _gauges(session, plan)


def _empty(plan: Plan) -> float | None:
    return 0.0 if plan.series.kind == "counter" or plan.fn in ("count", "rate") else None


async def _counters(session: AsyncSession, plan: Plan) -> list[MetricLine]:
    rows = []
    for resolution, since, until in plan.segments:
        rows += await repo.counter_sums(session, plan.lines, resolution, since, until, plan.step)
    per_line: list[dict[int, float]] = [defaultdict(float) for _ in plan.line_labels]
    for line, bucket, total in rows:
        per_line[line][bucket] += total
    out = []
    seconds = plan.until - plan.since
    for line, labels in enumerate(plan.line_labels):
        values = per_line[line]
        points: list[tuple[int, float | None]] = []
        for start in plan.starts:
            value = values.get(start, 0.0)
            points.append((start, value / plan.step if plan.fn == "rate" else value))
        total = sum(values.values())
        summary = _summary(points, plan)
        summary.total = total
        summary.rate = total / seconds if seconds else None
        out.append(MetricLine(labels=labels, points=points, summary=summary))
    return out


async def _histograms(session: AsyncSession, plan: Plan) -> list[MetricLine]:
    rows = []
    for resolution, since, until in plan.segments:
        rows += await repo.histogram_sums(session, plan.lines, resolution, since, until, plan.step)
    size = len(plan.series.buckets) + 1
    per_line: list[dict[int, tuple[float, float, list[float]]]] = [{} for _ in plan.line_labels]
    for row in rows:
        line, bucket, count, total = int(row[0]), int(row[1]), float(row[2] or 0), float(row[3] or 0)
        counts = [float(v or 0) for v in row[4 : 4 + size]]
        found = per_line[line].get(bucket)
        if found is not None:  # the same step from two resolutions (a segment boundary inside it)
            count += found[0]
            total += found[1]
            counts = [a + b for a, b in zip(counts, found[2], strict=True)]
        per_line[line][bucket] = (count, total, counts)
    out = []
    seconds = plan.until - plan.since
    bounds = plan.series.buckets
    for line, labels in enumerate(plan.line_labels):
        merged_count = merged_sum = 0.0
        merged = [0.0] * size
        points: list[tuple[int, float | None]] = []
        for start in plan.starts:
            found = per_line[line].get(start)
            if found is None:
                points.append((start, _empty(plan)))
                continue
            count, total, counts = found
            merged_count += count
            merged_sum += total
            for i, value in enumerate(counts):
                merged[i] += value
            points.append((start, _histogram_value(plan.fn, bounds, count, total, counts, plan.step)))
        summary = _summary(points, plan)
        summary.total = merged_count
        summary.rate = merged_count / seconds if seconds else None
        summary.avg = merged_sum / merged_count if merged_count else None
        summary.p50 = quantile(bounds, merged, 0.5)
        summary.p95 = quantile(bounds, merged, 0.95)
        summary.p99 = quantile(bounds, merged, 0.99)
        out.append(MetricLine(labels=labels, points=points, summary=summary))
    return out


def _histogram_value(
    fn: str, bounds: Sequence[float], count: float, total: float, counts: Sequence[float], step: int
) -> float | None:
    if fn in QUANTILES:
        return quantile(bounds, counts, QUANTILES[fn])
    if fn == "avg":
        return total / count if count else None
    if fn == "rate":
        return count / step
    return count


async def _gauges(session: AsyncSession, plan: Plan) -> list[MetricLine]:
    ids = list(plan.lines)
    first = plan.segments[0]
    before = await repo.gauge_before(session, ids, first[0], first[1], plan.stale_seconds)
    rows = []
    for resolution, since, until in plan.segments:
        rows += await repo.gauge_rows(session, ids, resolution, since, until)
    by_series: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for series_id, ts, value in [*before, *rows]:
        by_series[series_id].append((ts, value))
    # Each series' value per step: fn over its rows in the step, else the last one carried forward.
    per_line: list[list[list[float]]] = [[[] for _ in plan.starts] for _ in plan.line_labels]
    for series_id, samples in by_series.items():
        samples.sort()
        line = plan.lines[series_id]
        index = 0
        last: tuple[int, float] | None = None
        for slot, start in enumerate(plan.starts):
            end = start + plan.step
            inside: list[float] = []
            while index < len(samples) and samples[index][0] < end:
                if samples[index][0] >= start:
                    inside.append(samples[index][1])
                last = samples[index]
                index += 1
            if inside:
                per_line[line][slot].append(_gauge_fn(plan.fn, inside))
            elif last is not None and start - last[0] <= plan.stale_seconds:
                per_line[line][slot].append(last[1])
    out = []
    for line, labels in enumerate(plan.line_labels):
        points: list[tuple[int, float | None]] = []
        for slot, start in enumerate(plan.starts):
            values = per_line[line][slot]
            points.append((start, _across(plan.series.across, values) if values else None))
        summary = _summary(points, plan)
        present = [v for _, v in points if v is not None]
        summary.avg = sum(present) / len(present) if present else None
        out.append(MetricLine(labels=labels, points=points, summary=summary))
    return out


def _gauge_fn(fn: str, values: list[float]) -> float:
    if fn == "max":
        return max(values)
    if fn == "min":
        return min(values)
    if fn == "avg":
        return sum(values) / len(values)
    return values[-1]


def _across(how: str, values: list[float]) -> float:
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    return math.fsum(values)


def _summary(points: Sequence[tuple[int, float | None]], plan: Plan) -> MetricSummary:
    present = [v for _, v in points if v is not None]
    current = next((v for _, v in reversed(points) if v is not None), None)
    return MetricSummary(
        current=current,
        total=None,
        rate=None,
        avg=None,
        min=min(present) if present else None,
        max=max(present) if present else None,
        p50=None,
        p95=None,
        p99=None,
    )
