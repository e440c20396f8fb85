"""A rule's condition evaluated over the metric history at one instant, per label set of its
``group_by``: the value each reads and whether the condition holds. Reads go through the metric
history's repository and math (counters summed, histogram buckets merged before percentiles, gauges
combined as their series says), one statement for all of a rule's label sets."""

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


@dataclass(frozen=True)
class Instance:
    """One label set's outcome: the rule's filters and the grouped labels' values."""

    labels: dict[str, str]
    outcome: Outcome


def labels_key(labels: dict[str, str]) -> str:
    """A label set's identity: canonical JSON (sorted keys, no spaces)."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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


def _groups(
    rows: list[metrics_repo.SeriesRow], labels: dict[str, str], group_by: list[str]
) -> tuple[dict[str, dict[str, str]], dict[int, str]]:
    """The label sets of the rows matching ``labels`` (key -> labels) and each row's key. A row
    without a grouped label is grouped as if it had none (the label is left out of its set)."""
    sets: dict[str, dict[str, str]] = {}
    of: dict[int, str] = {}
    for row in rows:
        if row.labels == TOTAL_LABELS:
            continue
        parsed: dict[str, str] = json.loads(row.labels)
        if not all(parsed.get(name) == value for name, value in labels.items()):
            continue
        instance = dict(labels) | {name: parsed[name] for name in group_by if name in parsed}
        key = labels_key(instance)
        sets.setdefault(key, instance)
        of[row.id] = key
    return sets, of


async def evaluate(
    session: AsyncSession,
    series: SeriesDef,
    owner: str | None,
    labels: dict[str, str],
    group_by: list[str],
    condition: dict[str, Any],
    now: int,
    reading: Reading,
) -> dict[str, Instance]:
    """Each label set's outcome, by key.

    Without ``group_by`` there is always exactly one: the whole matching data, labelled by the
    filters (no data reads as a counter's 0, a gauge's "no data"). With it, a label set is there when
    it has data in the window (an increase, a gauge sample or a carried value, traffic for a ratio);
    one that has none is not in the answer, and the evaluator resolves it. Absence is the other way
    round: every label set the history still knows (the catalog's series) is judged, and when it
    knows none, one instance labelled by the filters fires.
    """
    rows = await metrics_repo.series_of(session, series.name, owner)
    if not group_by:
        key = labels_key(dict(labels))
        outcome = await _whole(session, series, rows, labels, condition, now, reading)
        return {key: Instance(dict(labels), outcome)}
    sets, of = _groups(rows, labels, group_by)
    window = int(condition.get("window_seconds", 300))
    since = now - window
    kind = condition["type"]
    out: dict[str, Instance] = {}
    if kind == "absence":
        latest = await metrics_repo.latest_ts_by_series(
            session, list(of), reading.resolution, series.kind == "histogram"
        )
        newest: dict[str, int] = {}
        for series_id, ts in latest.items():
            newest[of[series_id]] = max(ts, newest.get(of[series_id], ts))
        for key, instance in sets.items():
            seen = newest.get(key)
            if seen is None or seen < since:
                out[key] = Instance(instance, Outcome(True, None, f"no {series.name} data for {window} s"))
            else:
                out[key] = Instance(
                    instance, Outcome(False, float(now - seen), f"{series.name} last seen {now - seen} s ago")
                )
        if not sets:
            out[labels_key(dict(labels))] = Instance(
                dict(labels), Outcome(True, None, f"no {series.name} data for {window} s")
            )
        return out
    op, threshold = condition["op"], float(condition["value"])
    if kind == "ratio":
        numerator = set(_matching([r for r in rows if r.id in of], dict(condition["numerator"])))
        totals = await _counter_totals(session, of, reading.resolution, since, now)
        parts = await _counter_totals(
            session, {i: k for i, k in of.items() if i in numerator}, reading.resolution, since, now
        )
        for key, total in totals.items():
            out[key] = Instance(sets[key], _ratio(series, parts.get(key, 0.0), total, condition, window, op, threshold))
        return out
    if kind == "rate" or series.kind in ("counter", "histogram"):
        fn = "rate" if kind == "rate" else condition.get("fn") or series.default_fn
        if series.kind == "histogram":
            merged = await _histograms(session, of, reading.resolution, since, now, series)
            for key, (count, total_sum, buckets) in merged.items():
                value = _histogram_value(series, fn, count, total_sum, buckets, window)
                out[key] = Instance(sets[key], _judged(series, fn, value, op, threshold, window))
        else:
            for key, count in (await _counter_totals(session, of, reading.resolution, since, now)).items():
                value = count / window if fn == "rate" else count
                out[key] = Instance(sets[key], _judged(series, fn, value, op, threshold, window))
        return out
    fn = condition.get("fn") or series.default_fn
    per_group = await _gauges(session, of, reading, since, now, fn, series)
    for key, gauge in per_group.items():
        out[key] = Instance(sets[key], _judged(series, fn, gauge, op, threshold, window))
    return out


def _judged(series: SeriesDef, fn: str, value: float | None, op: str, threshold: float, window: int) -> Outcome:
    if value is None:
        return Outcome(False, None, f"no {series.name} data in the last {window} s")
    if fn == "rate":
        return Outcome(compare(value, op, threshold), value, f"{series.name} rate {value:.4g}/s {op} {threshold:g}")
    return Outcome(compare(value, op, threshold), value, f"{series.name} {fn} {value:.4g} {op} {threshold:g}")


def _ratio(
    series: SeriesDef, part: float, total: float, condition: dict[str, Any], window: int, op: str, threshold: float
) -> Outcome:
    if total < float(condition.get("min_total", 1.0)) or total <= 0:
        return Outcome(False, None, f"{series.name}: too little traffic to judge ({total:g} in {window} s)")
    ratio = part / total
    return Outcome(compare(ratio, op, threshold), ratio, f"{series.name} ratio {ratio:.4g} {op} {threshold:g}")


def _histogram_value(
    series: SeriesDef, fn: str, count: float, total_sum: float, buckets: list[float], window: int
) -> float | None:
    if fn in QUANTILES:
        return quantile(series.buckets, buckets, QUANTILES[fn])
    if fn == "avg":
        return total_sum / count if count else None
    if fn == "rate":
        return count / window
    return count


async def _whole(
    session: AsyncSession,
    series: SeriesDef,
    rows: list[metrics_repo.SeriesRow],
    labels: dict[str, str],
    condition: dict[str, Any],
    now: int,
    reading: Reading,
) -> Outcome:
    """The whole matching data as one (a rule without ``group_by``)."""
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
    one = dict.fromkeys(ids, "")
    if kind == "ratio":
        numerator = set(_matching([r for r in rows if r.id in one], dict(condition["numerator"])))
        total = (await _counter_totals(session, one, reading.resolution, since, now)).get("", 0.0)
        part = (await _counter_totals(session, dict.fromkeys(numerator, ""), reading.resolution, since, now)).get(
            "", 0.0
        )
        return _ratio(series, part, total, condition, window, op, threshold)
    fn = "rate" if kind == "rate" else condition.get("fn") or series.default_fn
    value: float | None
    if series.kind == "histogram":
        count, total_sum, buckets = (await _histograms(session, one, reading.resolution, since, now, series)).get(
            "", (0.0, 0.0, [0.0] * (len(series.buckets) + 1))
        )
        value = _histogram_value(series, fn, count, total_sum, buckets, window)
    elif series.kind == "counter":
        count = (await _counter_totals(session, one, reading.resolution, since, now)).get("", 0.0)
        value = count / window if fn == "rate" else count
    else:
        value = (await _gauges(session, one, reading, since, now, fn, series)).get("")
    return _judged(series, fn, value, op, threshold, window)


async def _counter_totals(
    session: AsyncSession, of: dict[int, str], resolution: int, since: int, until: int
) -> dict[str, float]:
    """Each group's increase over the window (groups with none are left out), from one statement."""
    if not of:
        return {}
    keys = sorted(set(of.values()))
    line_of = {key: i for i, key in enumerate(keys)}
    lines = {series_id: line_of[key] for series_id, key in of.items()}
    rows = await metrics_repo.counter_sums(session, lines, [(resolution, since, until + 1)], until + 1)
    out: dict[str, float] = {}
    for line, _, total in rows:
        out[keys[int(line)]] = out.get(keys[int(line)], 0.0) + float(total or 0)
    return out


async def _histograms(
    session: AsyncSession, of: dict[int, str], resolution: int, since: int, until: int, series: SeriesDef
) -> dict[str, tuple[float, float, list[float]]]:
    """Each group's merged count, sum and buckets over the window (groups with none left out)."""
    size = len(series.buckets) + 1
    if not of:
        return {}
    keys = sorted(set(of.values()))
    line_of = {key: i for i, key in enumerate(keys)}
    lines = {series_id: line_of[key] for series_id, key in of.items()}
    rows = await metrics_repo.histogram_sums(session, lines, [(resolution, since, until + 1)], until + 1, size)
    out: dict[str, tuple[float, float, list[float]]] = {}
    for row in rows:
        key = keys[int(row[0])]
        count, total, buckets = out.get(key, (0.0, 0.0, [0.0] * size))
        for i, value in enumerate(row[4 : 4 + size]):
            buckets[i] += float(value or 0)
        out[key] = (count + float(row[2] or 0), total + float(row[3] or 0), buckets)
    return out


async def _gauges(
    session: AsyncSession, of: dict[int, str], reading: Reading, since: int, until: int, fn: str, series: SeriesDef
) -> dict[str, float]:
    """Each group's value: ``fn`` over each series' samples (a carried value when none is newer),
    then the series of a group combined as the series says (``across``). No data: left out."""
    if not of:
        return {}
    ids = list(of)
    inside = await metrics_repo.gauge_rows(session, ids, reading.resolution, since, until + 1)
    before = await metrics_repo.gauge_before(session, ids, reading.resolution, since, reading.stale_seconds)
    per_series: dict[int, list[float]] = {}
    for series_id, _ts, value in inside:
        per_series.setdefault(series_id, []).append(value)
    for series_id, _ts, value in before:
        per_series.setdefault(series_id, [value])  # carried in only when nothing newer is in the window
    values: dict[str, list[float]] = {}
    for series_id, samples in per_series.items():
        if fn == "max":
            one = max(samples)
        elif fn == "min":
            one = min(samples)
        elif fn == "avg":
            one = sum(samples) / len(samples)
        else:
            one = samples[-1]
        values.setdefault(of[series_id], []).append(one)
    out: dict[str, float] = {}
    for key, group in values.items():
        out[key] = max(group) if series.across == "max" else min(group) if series.across == "min" else sum(group)
    return out
