"""The collector: samples this process's own metrics into the database every interval, rolls them up
as it goes, and (under a lease, one replica at a time) deletes what retention no longer keeps.

Each sample reads cumulative values — this process's Prometheus registry, the usage meter, a few
probes (index backlog, database pool, queue depth, WebSocket connections, disk space) — and turns
them into rows for the interval that just ended:

* counters: the increase since the last written sample (a row only when it is not zero);
* histograms: the increase of each fixed bucket, with count and sum (a row only when something was
  observed);
* gauges: the value, when it changed or ``gauge_heartbeat_seconds`` went by since its last row.

Roll-ups are incremental: the same increases are added to in-memory accumulators per resolution
(1 minute, 1 hour) and written when their period ends (and at shutdown; rows that meet an existing
row are merged in SQL). Baselines advance only when a write commits, so a failed write loses
nothing: its increases go into the next sample.

The loop never runs on the request path and never queues work: when it wakes up late (a slow write,
a busy loop) it skips the intervals it missed, counts them (``collector.skipped``) and records the
gap; the next sample carries their increases, so totals stay right and only resolution is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger
from trellis.metrics import repository as repo
from trellis.metrics.catalog import BY_NAME, TOTAL_LABELS, SeriesDef, route_class
from trellis.metrics.models import BUCKET_COLUMNS
from trellis.metrics.usage import UsageMeter
from trellis.settings import MetricsSettings
from trellis.storage.database import Database

log = get_logger(__name__)

MINUTE = 60
HOUR = 3600
ROLLUPS = (MINUTE, HOUR)
MAINTENANCE_LEASE = "metrics-maintenance"
SERIES_REFRESH_SECONDS = 3600

# (name, owner, canonical labels)
Key = tuple[str, str, str]
Sleep = Callable[[float], Awaitable[None]]
GaugeProbe = Callable[[], Awaitable[Iterable[tuple[str, dict[str, str], float]]]]
Publish = Callable[[dict[str, Any]], Awaitable[None]]


def canonical(labels: dict[str, str] | Iterable[tuple[str, str]]) -> str:
    """Labels as stored: JSON with sorted keys, no spaces."""
    pairs = labels.items() if isinstance(labels, dict) else labels
    return json.dumps(dict(sorted(pairs)), separators=(",", ":"), ensure_ascii=False)


def default_instance() -> str:
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{secrets.token_hex(2)}"


def _status_class(status: str) -> str:
    return f"{status[0]}xx" if len(status) == 3 and status.isdigit() else "other"


@dataclass
class Reading:
    """Cumulative values at one instant, by series key."""

    counters: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    # Per-bucket (not cumulative) counts, then count and sum.
    histograms: dict[Key, list[float]] = field(default_factory=dict)
    gauges: dict[Key, float] = field(default_factory=dict)


def _histogram_slot(reading: Reading, key: Key, size: int) -> list[float]:
    slot = reading.histograms.get(key)
    if slot is None:
        slot = [0.0] * (size + 2)  # buckets, count, sum
        reading.histograms[key] = slot
    return slot


def _bucket_index(series: SeriesDef) -> dict[float, int]:
    index = {bound: i for i, bound in enumerate(series.buckets)}
    index[math.inf] = len(series.buckets)
    return index


_HTTP_LATENCY = BY_NAME["http.latency"]
_MODEL_LATENCY = BY_NAME["model.latency"]
_BUCKET_INDEX = {"http.latency": _bucket_index(_HTTP_LATENCY), "model.latency": _bucket_index(_MODEL_LATENCY)}


def read_registry(registry: CollectorRegistry, reading: Reading) -> None:
    """This process's Prometheus registry, mapped onto the catalogue's series (cumulative)."""
    # Histogram buckets arrive cumulative per Prometheus series; summed per key they stay
    # cumulative, and are turned into per-bucket counts at the end.
    cumulative: dict[Key, list[float]] = {}
    sizes: dict[Key, int] = {}
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "trellis_http_requests_total":
                cls = route_class(labels.get("route", ""))
                status = labels.get("status", "")
                reading.counters[
                    (
                        "http.requests",
                        "",
                        canonical({"route_class": cls, "status": status, "status_class": _status_class(status)}),
                    )
                ] += value
                if status == "429":
                    reading.counters[("ratelimit.denials", "", canonical({"route_class": cls}))] += value
            elif name.startswith("trellis_http_request_duration_seconds_"):
                key = ("http.latency", "", canonical({"route_class": route_class(labels.get("route", ""))}))
                _histogram_part(reading, cumulative, sizes, key, "http.latency", name, labels, value)
            elif name == "trellis_gateway_requests_total":
                reading.counters[
                    (
                        "model.calls",
                        "",
                        canonical({"model": labels.get("model", ""), "status": labels.get("status", "")}),
                    )
                ] += value
            elif name.startswith("trellis_gateway_latency_seconds_"):
                key = ("model.latency", "", canonical({"model": labels.get("model", "")}))
                _histogram_part(reading, cumulative, sizes, key, "model.latency", name, labels, value)
            elif name == "trellis_gateway_fallbacks_total":
                reading.counters[("model.fallbacks", "", canonical(labels))] += value
            elif name == "trellis_gateway_retries_total":
                reading.counters[("model.retries", "", canonical(labels))] += value
            elif name == "trellis_gateway_cache_total":
                reading.counters[("cache.lookups", "", canonical(labels))] += value
            elif name == "trellis_gateway_breaker_open":
                reading.gauges[("breaker.open", "", canonical(labels))] = value
            elif name == "trellis_episodic_log_dropped_total":
                reading.counters[("log.dropped", "", canonical(labels))] += value
            elif name == "trellis_workflow_runs_total":
                reading.counters[("workflow.runs", "", canonical(labels))] += value
            elif name == "trellis_workflow_runs_active":
                reading.gauges[("workflow.active", "", "{}")] = value
            elif name == "trellis_ws_connections":
                reading.gauges[("ws.connections", "", "{}")] = value
    for key, cum in cumulative.items():
        slot = _histogram_slot(reading, key, sizes[key])
        previous = 0.0
        for i in range(sizes[key]):
            slot[i] += cum[i] - previous
            previous = cum[i]


def _histogram_part(
    reading: Reading,
    cumulative: dict[Key, list[float]],
    sizes: dict[Key, int],
    key: Key,
    series: str,
    name: str,
    labels: dict[str, str],
    value: float,
) -> None:
    index = _BUCKET_INDEX[series]
    size = len(index)
    if name.endswith("_bucket"):
        position = index.get(float(labels.get("le", "inf")))
        if position is None:
            return
        cum = cumulative.get(key)
        if cum is None:
            cum = cumulative[key] = [0.0] * size
            sizes[key] = size
        cum[position] += value
    elif name.endswith("_count"):
        _histogram_slot(reading, key, size)[size] += value
    elif name.endswith("_sum"):
        _histogram_slot(reading, key, size)[size + 1] += value


def add_totals(reading: Reading) -> None:
    """Each labelled counter's and histogram's total series (``catalog.TOTAL_LABELS``)."""
    counters: dict[Key, float] = defaultdict(float)
    for (name, owner, labels), value in reading.counters.items():
        if labels != "{}" and BY_NAME.get(name) is not None and BY_NAME[name].labels:
            counters[(name, owner, TOTAL_LABELS)] += value
    reading.counters.update(counters)
    histograms: dict[Key, list[float]] = {}
    for (name, owner, labels), slot in reading.histograms.items():
        if labels != "{}":
            total = histograms.get((name, owner, TOTAL_LABELS))
            if total is None:
                histograms[(name, owner, TOTAL_LABELS)] = list(slot)
            else:
                for i, value in enumerate(slot):
                    total[i] += value
    reading.histograms.update(histograms)


@dataclass
class Accumulator:
    """One roll-up period's increases (and gauges' last values) by series key."""

    start: int
    counters: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    histograms: dict[Key, list[float]] = field(default_factory=dict)
    gauges: dict[Key, float] = field(default_factory=dict)

    def copy(self) -> Accumulator:
        return Accumulator(
            self.start,
            defaultdict(float, self.counters),
            {key: list(value) for key, value in self.histograms.items()},
            dict(self.gauges),
        )


@dataclass
class CollectorStats:
    samples: int = 0
    rows_written: int = 0
    skipped: int = 0
    errors: int = 0
    last_sample_at: datetime | None = None
    last_duration_ms: float | None = None
    last_gap: tuple[datetime, datetime, int] | None = None
    maintenance_runs: int = 0
    rows_deleted: int = 0
    cpu_seconds: float = 0.0


@dataclass
class Batch:
    """The rows of one sample, and the state to adopt once they are committed."""

    counters: list[tuple[Key, int, int, float]] = field(default_factory=list)  # key, resolution, ts, value
    gauges: list[tuple[Key, int, int, float]] = field(default_factory=list)
    histograms: list[tuple[Key, int, int, list[float]]] = field(default_factory=list)

    def series_keys(self) -> set[Key]:
        out = {row[0] for row in self.counters}
        out.update(row[0] for row in self.gauges)
        out.update(row[0] for row in self.histograms)
        return out

    def __len__(self) -> int:
        return len(self.counters) + len(self.gauges) + len(self.histograms)


class MetricsCollector:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: MetricsSettings,
        registry: CollectorRegistry,
        usage: UsageMeter,
        *,
        probes: Iterable[GaugeProbe] = (),
        publish: Publish | None = None,
        sleep: Sleep = asyncio.sleep,
        instance: str | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self.settings = settings
        self._registry = registry
        self._usage = usage
        self._probes = list(probes)
        self._publish = publish
        self._sleep = sleep
        self.instance = instance or settings.instance or default_instance()
        self.interval = settings.interval_seconds
        self.stats = CollectorStats()
        # Committed state: cumulative baselines, accumulators, when each gauge was last written.
        self._baseline = Reading()
        self._rollups: dict[int, Accumulator] = {}
        self._gauge_written: dict[tuple[Key, int], tuple[int, float]] = {}
        self._last_tick: int | None = None
        self._series: dict[Key, int] = {}
        self._series_refreshed = 0.0
        self._next_maintenance = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- reading ----------------------------------------------------------------------------------

    async def read(self) -> Reading:
        reading = Reading()
        read_registry(self._registry, reading)
        for (name, owner, pairs), value in list(self._usage.totals.items()):
            reading.counters[(name, owner, canonical(pairs))] += value
        reading.counters[("collector.skipped", "", "{}")] += self.stats.skipped
        for probe in self._probes:
            try:
                for gauge, labels, level in await probe():
                    reading.gauges[(gauge, "", canonical(labels))] = level
            except Exception as exc:  # noqa: BLE001 - a probe failing costs its gauge, not the sample
                log.warning("metrics_probe_failed", error=type(exc).__name__, detail=str(exc)[:200])
        add_totals(reading)
        return reading

    # --- one sample ------------------------------------------------------------------------------

    def _tick(self, now: datetime) -> int:
        return int(now.timestamp()) // self.interval * self.interval

    async def sample(self, now: datetime | None = None) -> int:
        """Take one sample at ``now`` (default: the clock's): the interval ending at the current
        tick. Returns the rows written. A write failure raises after keeping the increases."""
        started = time.perf_counter()
        cpu_started = time.process_time()
        now = now or self._clock.now()
        tick = self._tick(now)
        ts = tick - self.interval  # the rows cover [ts, tick)
        if self._last_tick is not None and tick <= self._last_tick:
            return 0  # this interval was sampled already
        reading = await self.read()
        batch, baseline, rollups, written = self._build(reading, ts)
        try:
            await self._write(batch, now)
        except Exception:
            self.stats.errors += 1
            raise
        self._baseline, self._rollups, self._gauge_written = baseline, rollups, written
        self._last_tick = tick
        self.stats.samples += 1
        self.stats.rows_written += len(batch)
        self.stats.last_sample_at = now
        self.stats.last_duration_ms = round((time.perf_counter() - started) * 1000, 3)
        self.stats.cpu_seconds += time.process_time() - cpu_started
        if self._publish is not None and self.settings.publish_summaries:
            with contextlib.suppress(Exception):
                await self._publish(self.summary(batch, ts))
        return len(batch)

    def _build(
        self, reading: Reading, ts: int
    ) -> tuple[Batch, Reading, dict[int, Accumulator], dict[tuple[Key, int], tuple[int, float]]]:
        batch = Batch()
        base = self._baseline
        rollups = {res: acc.copy() for res, acc in self._rollups.items()}
        written = dict(self._gauge_written)
        # Roll-up periods that ended before this sample's: written now.
        for res in ROLLUPS:
            start = ts // res * res
            acc = rollups.get(res)
            if acc is not None and acc.start != start:
                self._flush_into(batch, acc, res, written)
                acc = None
            if acc is None:
                rollups[res] = Accumulator(start)
        for key, value in reading.counters.items():
            delta = value - base.counters.get(key, 0.0)
            if delta < 0:  # a reset (cannot happen within one process; kept safe)
                delta = value
            if delta == 0:
                continue
            batch.counters.append((key, self.interval, ts, delta))
            for res in ROLLUPS:
                rollups[res].counters[key] += delta
        for key, slot in reading.histograms.items():
            before = base.histograms.get(key)
            delta_slot = [v - (before[i] if before else 0.0) for i, v in enumerate(slot)]
            count = len(delta_slot) - 2
            if delta_slot[count] <= 0:
                continue
            batch.histograms.append((key, self.interval, ts, delta_slot))
            for res in ROLLUPS:
                acc_slot = rollups[res].histograms.get(key)
                if acc_slot is None:
                    rollups[res].histograms[key] = list(delta_slot)
                else:
                    for i, v in enumerate(delta_slot):
                        acc_slot[i] += v
        heartbeat = self.settings.gauge_heartbeat_seconds
        for key, value in reading.gauges.items():
            last = written.get((key, self.interval))
            if last is None or last[1] != value or ts - last[0] >= heartbeat:
                batch.gauges.append((key, self.interval, ts, value))
                written[(key, self.interval)] = (ts, value)
            for res in ROLLUPS:
                rollups[res].gauges[key] = value
        new_base = Reading()
        new_base.counters = dict(reading.counters)
        new_base.histograms = {key: list(value) for key, value in reading.histograms.items()}
        return batch, new_base, rollups, written

    def _flush_into(
        self, batch: Batch, acc: Accumulator, res: int, written: dict[tuple[Key, int], tuple[int, float]]
    ) -> None:
        for key, value in acc.counters.items():
            if value != 0:
                batch.counters.append((key, res, acc.start, value))
        for key, slot in acc.histograms.items():
            batch.histograms.append((key, res, acc.start, slot))
        heartbeat = self.settings.gauge_heartbeat_seconds
        for key, value in acc.gauges.items():
            last = written.get((key, res))
            if last is None or last[1] != value or acc.start - last[0] >= heartbeat:
                batch.gauges.append((key, res, acc.start, value))
                written[(key, res)] = (acc.start, value)

    async def _write(self, batch: Batch, now: datetime) -> None:
        if not batch:
            return
        if self._clock.monotonic() - self._series_refreshed > SERIES_REFRESH_SECONDS:
            self._series.clear()  # retention may have removed a long-idle series
            self._series_refreshed = self._clock.monotonic()
        async with self._db.transaction() as session:
            missing = sorted(key for key in batch.series_keys() if key not in self._series)
            if missing:
                self._series.update(await repo.ensure_series(session, missing, self.instance, now))
            ids = self._series
            await repo.write_samples(
                session,
                [{"series_id": ids[k], "resolution": r, "ts": t, "value": v} for k, r, t, v in batch.counters],
                [{"series_id": ids[k], "resolution": r, "ts": t, "value": v} for k, r, t, v in batch.gauges],
            )
            rows = []
            for key, res, ts, slot in batch.histograms:
                size = len(slot) - 2
                row: dict[str, Any] = {
                    "series_id": ids[key],
                    "resolution": res,
                    "ts": ts,
                    "count": int(slot[size]),
                    "sum": slot[size + 1],
                }
                for i, column in enumerate(BUCKET_COLUMNS):
                    row[column] = int(slot[i]) if i < size and slot[i] else None
                rows.append(row)
            await repo.write_histograms(session, rows)

    async def flush(self, now: datetime | None = None) -> int:
        """Write the roll-up periods in progress (at shutdown): a restart merges into them."""
        now = now or self._clock.now()
        batch = Batch()
        written = dict(self._gauge_written)
        for res, acc in self._rollups.items():
            self._flush_into(batch, acc, res, written)
        await self._write(batch, now)
        self._rollups = {res: Accumulator(acc.start) for res, acc in self._rollups.items()}
        self._gauge_written = written
        return len(batch)

    def summary(self, batch: Batch, ts: int) -> dict[str, Any]:
        """This sample's headline numbers (the dashboard feed's ``metrics_sample``)."""
        requests = errors = calls = tokens = cost = 0.0
        latency: list[float] | None = None
        for (name, _owner, labels), res, _ts, value in batch.counters:
            if res != self.interval or labels == TOTAL_LABELS:
                continue
            if name == "http.requests":
                requests += value
                if '"status_class":"5xx"' in labels:
                    errors += value
            elif name == "usage.calls":
                calls += value
            elif name == "usage.tokens":
                tokens += value
            elif name == "usage.cost":
                cost += value
        for (name, _owner, labels), res, _ts, slot in batch.histograms:
            if res == self.interval and name == "http.latency" and labels != TOTAL_LABELS:
                latency = list(slot) if latency is None else [a + b for a, b in zip(latency, slot, strict=True)]
        p95 = None
        if latency is not None:
            from trellis.metrics.history import quantile

            p95 = quantile(_HTTP_LATENCY.buckets, latency[: len(latency) - 2], 0.95)
        return {
            "instance": self.instance,
            "at": datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z"),
            "interval_seconds": self.interval,
            "requests": requests,
            "errors": errors,
            "p95_seconds": p95,
            "model_calls": calls,
            "tokens": tokens,
            "cost": cost,
        }

    # --- maintenance (one replica at a time) --------------------------------------------------------

    async def maintain(self, now: datetime | None = None) -> int | None:
        """Retention: delete rows older than each resolution keeps, then empty series. Runs only
        while this process holds the maintenance lease; returns the rows deleted as the driver counts
        them (asyncpg reports none for a batch) or None when another replica holds the lease."""
        now = now or self._clock.now()
        settings = self.settings
        async with self._db.transaction() as session:
            epoch = await repo.acquire_lease(session, MAINTENANCE_LEASE, self.instance, now, settings.lease_seconds)
        if epoch is None:
            return None
        stamp = int(now.timestamp())
        keep = {
            self.interval: settings.raw_retention_hours * HOUR,
            MINUTE: settings.minute_retention_days * 86_400,
            HOUR: settings.hour_retention_days * 86_400,
        }
        deleted = 0
        async with self._db.session() as session:
            ids = await repo.all_series_ids(session)
        for res, seconds in keep.items():
            for chunk in range(0, len(ids), 500):
                async with self._db.transaction() as session:
                    deleted += await repo.delete_before(session, ids[chunk : chunk + 500], res, stamp - seconds)
        async with self._db.transaction() as session:
            await repo.delete_empty_series(session, now - timedelta(seconds=max(keep.values()) + 86_400))
        self.stats.maintenance_runs += 1
        self.stats.rows_deleted += deleted
        return deleted

    # --- the loop ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-collector")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        try:
            await self.sample()
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - shutting down: say so and go on
            log.warning("metrics_final_sample_failed", error=type(exc).__name__)

    def _seconds_to_next_tick(self) -> float:
        now = self._clock.now().timestamp()
        return (math.floor(now / self.interval) + 1) * self.interval - now

    async def run_once(self) -> None:
        """One turn of the loop after waking: count the intervals missed, sample, maybe maintain."""
        now = self._clock.now()
        tick = self._tick(now)
        if self._last_tick is not None and tick - self._last_tick > self.interval:
            missed = (tick - self._last_tick) // self.interval - 1
            self.stats.skipped += missed
            gap_from = datetime.fromtimestamp(self._last_tick, UTC)
            self.stats.last_gap = (gap_from, datetime.fromtimestamp(tick - self.interval, UTC), missed)
            log.warning("metrics_collector_behind", skipped=missed, total_skipped=self.stats.skipped)
        try:
            await self.sample(now)
        except Exception as exc:  # noqa: BLE001 - the next sample carries these increases
            log.warning("metrics_sample_failed", error=type(exc).__name__, detail=str(exc)[:200])
        if self._clock.monotonic() >= self._next_maintenance:
            self._next_maintenance = self._clock.monotonic() + self.settings.maintenance_seconds
            try:
                await self.maintain()
            except Exception as exc:  # noqa: BLE001
                log.warning("metrics_maintenance_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _run(self) -> None:
        while not self._stopping:
            await self._sleep(self._seconds_to_next_tick())
            await self.run_once()
