"""A rule's condition evaluated over the metric history at one instant: the value it reads and
whether the condition holds. Reads go through the metric history's repository and math (counters
summed, histogram buckets merged before percentiles, gauges combined as their series says)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trellis.metrics import repository as metrics_repo
from trellis.metrics.catalog import QUANTILES, TOTAL_LABELS, SeriesDef
from trellis.metrics.history import quantile


@dataclass(frozen=True)
class Outcome:
    holds: bool
    value: float | None
    message: str


@dataclass(frozen=True)
class Reading:
    """Where a rule reads: the resolution and the staleness limit of carried gauge values."""

    resolution: int
    stale_seconds: int


def compare(value: float, op: str, threshold: float) -> bool:
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold, "<=": value <= threshold}[op]


def _matching(rows: list[metrics_repo.SeriesRow], labels: dict[str, str]) -> list[int]:
    out = []
    for row in rows:
        if row.labels == TOTAL_LABELS:
            continue  # the sum of the others: counting it too would count twice
        parsed: dict[str, str] = json.loads(row.labels)
        if all(parsed.get(name) == value for name, value in labels.items()):
            out.append(row.id)
    return out


async def evaluate(
    session: AsyncSession,
    series: SeriesDef,
    owner: str | None,
    labels: dict[str, str],
    condition: dict[str, Any],
    now: int,
    reading: Reading,
) -> Outcome:
    rows = await metrics_repo.series_of(session, series.name, owner)
    ids = _matching(rows, labels)
    window = int(condition.get("window_seconds", 300))
    since = now - window
    kind = condition["type"]
    if kind == "absence":
        latest = await metrics_repo.latest_ts(session, ids, reading.resolution, series.kind == "histogram")
        if latest is None or latest < since:
            return Outcome(True, None, f"no {series.name} data for {window} s")
        return Outcome(False, float(now - latest), f"{series.name} last seen {now - latest} s ago")
    op, threshold = condition["op"], float(condition["value"])
    if kind == "ratio":
        numerator_ids = set(_matching([r for r in rows if r.id in set(ids)], dict(condition["numerator"])))
        total = await _counter_total(session, ids, reading.resolution, since, now)
        part = await _counter_total(session, list(numerator_ids), reading.resolution, since, now)
        if total < float(condition.get("min_total", 1.0)) or total <= 0:
            return Outcome(False, None, f"{series.name}: too little traffic to judge ({total:g} in {window} s)")
        ratio = part / total
        return Outcome(compare(ratio, op, threshold), ratio, f"{series.name} ratio {ratio:.4g} {op} {threshold:g}")
    if kind == "rate":
        if series.kind == "histogram":
            count = (await _histogram(session, ids, reading.resolution, since, now, series))[0]
        else:
            count = await _counter_total(session, ids, reading.resolution, since, now)
        rate = count / window
        return Outcome(compare(rate, op, threshold), rate, f"{series.name} rate {rate:.4g}/s {op} {threshold:g}")
    fn = condition.get("fn") or series.default_fn
    value: float | None
    if series.kind == "counter":
        value = await _counter_total(session, ids, reading.resolution, since, now)
        if fn == "rate":
            value /= window
    elif series.kind == "histogram":
        count, total_sum, buckets = await _histogram(session, ids, reading.resolution, since, now, series)
        if fn in QUANTILES:
            value = quantile(series.buckets, buckets, QUANTILES[fn])
        elif fn == "avg":
            value = total_sum / count if count else None
        elif fn == "rate":
            value = count / window
        else:
            value = count
    else:
        value = await _gauge(session, ids, reading, since, now, fn, series)
    if value is None:
        return Outcome(False, None, f"no {series.name} data in the last {window} s")
    return Outcome(compare(value, op, threshold), value, f"{series.name} {fn} {value:.4g} {op} {threshold:g}")


async def _counter_total(session: AsyncSession, ids: list[int], resolution: int, since: int, until: int) -> float:
    if not ids:
        return 0.0
    rows = await metrics_repo.counter_sums(session, dict.fromkeys(ids, 0), [(resolution, since, until + 1)], until + 1)
    return sum(float(total) for _, _, total in rows)


async def _histogram(
    session: AsyncSession, ids: list[int], resolution: int, since: int, until: int, series: SeriesDef
) -> tuple[float, float, list[float]]:
    size = len(series.buckets) + 1
    if not ids:
        return 0.0, 0.0, [0.0] * size
    rows = await metrics_repo.histogram_sums(
        session, dict.fromkeys(ids, 0), [(resolution, since, until + 1)], until + 1, size
    )
    count = total = 0.0
    buckets = [0.0] * size
    for row in rows:
        count += float(row[2] or 0)
        total += float(row[3] or 0)
        for i, value in enumerate(row[4 : 4 + size]):
            buckets[i] += float(value or 0)
    return count, total, buckets


async def _gauge(
    session: AsyncSession, ids: list[int], reading: Reading, since: int, until: int, fn: str, series: SeriesDef
) -> float | None:
    if not ids:
        return None
    inside = await metrics_repo.gauge_rows(session, ids, reading.resolution, since, until + 1)
    before = await metrics_repo.gauge_before(session, ids, reading.resolution, since, reading.stale_seconds)
    per_series: dict[int, list[float]] = {}
    for series_id, _ts, value in inside:
        per_series.setdefault(series_id, []).append(value)
    for series_id, _ts, value in before:
        per_series.setdefault(series_id, [value])  # carried in only when nothing newer is in the window
    values = []
    for samples in per_series.values():
        if fn == "max":
            values.append(max(samples))
        elif fn == "min":
            values.append(min(samples))
        elif fn == "avg":
            values.append(sum(samples) / len(samples))
        else:
            values.append(samples[-1])
    if not values:
        return None
    if series.across == "max":
        return max(values)
    if series.across == "min":
        return min(values)
    return sum(values)
