"""Gauges the collector reads that no Prometheus metric holds: the database pool, the context
indexer's backlog, the workflow queue's depth, the data directory's free space."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from trellis.kit.clock import Clock
from trellis.metrics.collector import GaugeProbe
from trellis.storage.database import Database
from trellis.workflows import repository as workflow_repo

Readings = list[tuple[str, dict[str, str], float]]


def pool_probe(database: Database) -> GaugeProbe:
    async def probe() -> Readings:
        pool = database.engine.sync_engine.pool
        in_use = getattr(pool, "checkedout", None)
        idle = getattr(pool, "checkedin", None)
        if in_use is None or idle is None:
            return []
        return [("db.pool", {"state": "in_use"}, float(in_use())), ("db.pool", {"state": "idle"}, float(idle()))]

    return probe


def backlog_probe(backlog: Callable[[], int]) -> GaugeProbe:
    async def probe() -> Readings:
        return [("index.backlog", {}, float(backlog()))]

    return probe


def queue_probe(database: Database, clock: Clock, every_seconds: float = 60.0) -> GaugeProbe:
    """A database count: read at most once a minute (the other samples repeat it), since it is
    most of a sample's cost and a queue's depth needs no 10-second resolution."""
    last: list[tuple[float, Readings]] = []

    async def probe() -> Readings:
        now = clock.monotonic()
        if last and now - last[0][0] < every_seconds:
            return last[0][1]
        async with database.reader() as session:
            depth = await workflow_repo.queue_depth(session, clock.now())
        readings: Readings = [("workflow.queue_depth", {}, float(depth))]
        last[:] = [(now, readings)]
        return readings

    return probe


def disk_probe(data_dir: Path) -> GaugeProbe:
    async def probe() -> Readings:
        usage = shutil.disk_usage(data_dir)  # one statvfs: microseconds
        return [("disk.free_bytes", {}, float(usage.free)), ("disk.free_ratio", {}, usage.free / usage.total)]

    return probe


def data_dir_gauge(registry: CollectorRegistry, data_dir: Path) -> Gauge:
    """``trellis_data_dir_free_ratio`` for Prometheus, read at each scrape (deploy/prometheus's disk rule)."""
    gauge = Gauge(
        "trellis_data_dir_free_ratio", "Free fraction of the data directory's file system.", registry=registry
    )

    def ratio() -> float:
        try:
            usage = shutil.disk_usage(data_dir)
        except OSError:
            return float("nan")
        return usage.free / usage.total

    gauge.set_function(ratio)
    return gauge
