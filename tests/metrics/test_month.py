"""``bench/metrics_history.py --month real``'s loop, two simulated hours on each database: the metric
sources driven directly (``bench/_metrics_month.py``), the collector's real loop turn (sampling,
roll-ups, retention at its cadence). The rows it leaves are checked against what the traffic put in:
every 1-minute and 1-hour roll-up equals the requests (and tokens) of the minutes it covers, the raw
rows that remain add up the same way, and retention (raw rows kept 1 hour here, so that two hours
exercise it) left no row older than each resolution keeps and removed nothing younger."""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import text

from tests.conftest import Harness
from trellis.metrics.catalog import TOTAL_LABELS


def _bench_module() -> ModuleType:
    """``bench/_metrics_month.py``, loaded by path (bench/ is no package, and stays off sys.path)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "_metrics_month.py"
    spec = importlib.util.spec_from_file_location("_metrics_month", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_metrics_month"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


month = _bench_module()
HOURS = 2


async def totals(h: Harness, name: str, resolution: int) -> dict[int, float]:
    """ts -> the sum of ``name``'s total series (every owner's) at ``resolution``."""
    async with h.runtime.database.session() as session:
        result = await session.execute(
            text(
                "SELECT s.ts, SUM(s.value) FROM metric_samples s JOIN metric_series m ON m.id = s.series_id "
                "WHERE m.name = :name AND m.labels = :total AND s.resolution = :r GROUP BY s.ts"
            ),
            {"name": name, "total": TOTAL_LABELS, "r": resolution},
        )
        return {int(ts): float(value) for ts, value in result.all()}


async def latency_counts(h: Harness, resolution: int) -> dict[int, int]:
    async with h.runtime.database.session() as session:
        result = await session.execute(
            text(
                "SELECT s.ts, SUM(s.count) FROM metric_histograms s JOIN metric_series m ON m.id = s.series_id "
                "WHERE m.name = 'http.latency' AND m.labels = :total AND s.resolution = :r GROUP BY s.ts"
            ),
            {"total": TOTAL_LABELS, "r": resolution},
        )
        return {int(ts): int(count) for ts, count in result.all()}


async def oldest(h: Harness) -> dict[int, int]:
    """resolution -> the oldest ts left, over both tables."""
    out: dict[int, int] = {}
    async with h.runtime.database.session() as session:
        for table in ("metric_samples", "metric_histograms"):
            result = await session.execute(text(f"SELECT resolution, MIN(ts) FROM {table} GROUP BY resolution"))  # noqa: S608
            for resolution, ts in result.all():
                out[int(resolution)] = min(out.get(int(resolution), int(ts)), int(ts))
    return out


def by_period(ledger: dict[int, int], period: int) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for minute, value in ledger.items():
        out[minute // period * period] += value
    return dict(out)


async def test_a_simulated_stretch_adds_up_and_keeps_within_retention(
    make_harness: Callable[..., Any], database_url: str
) -> None:
    async with make_harness(database_url=database_url, metrics={"raw_retention_hours": 1}) as h:
        collector = h.runtime.monitoring.collector
        now = h.clock.now().timestamp()
        # Just past the top of an hour: the stretch is two whole hour roll-ups.
        h.clock.advance(3600 - now % 3600 + 0.5)
        start = int(h.clock.now().timestamp())
        traffic = month.Traffic(h.runtime, h.app.state.metrics, varied=True, ledger=True)
        samples = HOURS * 3600 // collector.interval
        cost = await month.live_through(h.runtime, h.clock, traffic, samples)
        await collector.flush()  # the minute and hour in progress
        assert traffic.ledger is not None
        requests, tokens = dict(traffic.ledger.requests), dict(traffic.ledger.tokens)
        assert sorted(requests) == list(range(start, start + HOURS * 3600, 60))
        assert sum(tokens.values()) > 0

        # Roll-ups: each minute's and hour's row is what the traffic put in during it.
        assert await totals(h, "http.requests", 60) == {ts: float(n) for ts, n in requests.items()}
        assert await latency_counts(h, 60) == requests
        assert await totals(h, "http.requests", 3600) == {ts: float(n) for ts, n in by_period(requests, 3600).items()}
        assert await latency_counts(h, 3600) == by_period(requests, 3600)
        minute_tokens = {ts: float(n) for ts, n in tokens.items() if n}
        assert await totals(h, "usage.tokens", 60) == minute_tokens
        assert sum((await totals(h, "usage.tokens", 3600)).values()) == sum(tokens.values())

        # Retention ran every 10 simulated minutes; its last run deleted raw rows older than 1 hour.
        assert len(cost.maintained_at) == samples * collector.interval // collector.settings.maintenance_seconds
        cutoff = cost.maintained_at[-1] - 3600
        raw = await totals(h, "http.requests", collector.interval)
        assert min(raw) == cutoff  # nothing older left, nothing younger removed
        assert sorted(raw) == list(range(cutoff, start + HOURS * 3600, collector.interval))
        for ts, value in by_period({ts: int(v) for ts, v in raw.items()}, 60).items():
            if ts >= cutoff:  # whole minutes still kept raw
                assert value == requests[ts]
        # Minute (14 days) and hour (90 days) rows: all kept, from the first minute on.
        assert (await oldest(h)) == {collector.interval: cutoff, 60: start, 3600: start}
