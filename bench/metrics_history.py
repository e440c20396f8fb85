"""The metric history: database size after a simulated month, query latency, the collector's CPU.

One in-process Trellis (the real app, the real collector, a clock the script moves) on a fresh
SQLite file (and, with ``--postgres``, a fresh PostgreSQL database) lives through simulated traffic
at the default 10-second interval, one turn of the collector's loop per interval.

What is simulated and what is real (``_metrics_month.py``): no HTTP request is made and no model
is called. Each interval, the numbers requests and model calls would leave behind are put straight
into the objects the real code updates (``HttpMetrics.observe``, which the app's middleware calls;
the gateway's Prometheus counters and latency histogram; ``UsageMeter.record``, which the gateway
calls with each call record; the workflow and WebSocket gauges): a few dozen requests over eight
routes and five statuses with latencies, model calls by model and user with tokens and cost, gauges
that move. Everything after that is the production code: ``MetricsCollector.run_once`` reads the
registry and the usage meter, computes the deltas, rolls them up 10 s -> 1 min -> 1 h, writes its
batches and runs retention every 10 simulated minutes.

Two modes:

* ``--month copy`` (default): ``--days`` are simulated, and the rest of ``--month-days`` is filled
  with copies of the last day's roll-up rows (quick; every day alike);
* ``--month real``: all ``--month-days`` (30: 259,200 samples) are simulated, with varied traffic
  (weekends, growth, incident hours, users appearing; ``Traffic(varied=True)``), and the database's
  size and rows are printed after each day. Unless ``--no-copy-baseline``, a copy-based run of one
  day of the same traffic comes first, and the two are compared at the end.

Then, for each run:

* **size**: the database file (SQLite, after a checkpoint) or ``pg_database_size``, and rows per
  resolution;
* **queries**: ``GET /api/v1/db/metrics`` through the app (auth included) for 24 hours at 1-minute
  steps and for the whole month at 1-hour steps, counters and p95 latency; p50/p95 of ``--repeat``
  calls each. Baseline in the same run: the 24-hour counter query read from the raw 10-second rows
  (what the history would cost without roll-ups);
* **collector CPU**: the process CPU time (all threads: aiosqlite's included) per sample during the
  last simulated day (and over the whole run), as a share of one core at the 10-second interval.

    .venv/bin/python bench/metrics_history.py --days 1          # SQLite, a day copied to a month
    .venv/bin/python bench/metrics_history.py --month real      # SQLite, a real month (over an hour)
    .venv/bin/python bench/metrics_history.py --postgres postgres@127.0.0.1:5432

Targets (issue 16): queries p95 under 50 ms on SQLite, collector under 1% of a core; the size is
reported (a previous attempt measured 456 MB for a month).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from _common import (
    BenchError,
    new_admin_key,
    percentile,
    render_table,
    result_header,
    stop_on_signals,
    unlimited_rate_limits,
    write_results,
)
from _databases import check_postgres, postgres_database
from _metrics_month import LoopCost, Traffic, live_through
from trellis.app import create_app
from trellis.kit.clock import ManualClock
from trellis.runtime import Runtime
from trellis.settings import Settings
from trellis.storage import migrate


async def fill_month(runtime: Runtime, now: datetime, days: int, month_days: int) -> int:
    """The rest of a month, before the simulated days: copies of the last simulated day's roll-up
    rows shifted back a day at a time, at the resolutions retention keeps for that age (minute
    rows for the last 14 days, hour rows for all). The rows the collector wrote, not invented ones:
    the database then has a month's steady-state shape for the size and the month-long queries."""
    end = int(now.timestamp())
    day = 86_400
    copied = 0
    async with runtime.database.transaction() as session:
        for back in range(days, month_days):
            shift = back * day
            for table in ("metric_samples", "metric_histograms"):
                for resolution, keep_days in ((60, 14), (3600, 90)):
                    if back >= keep_days:
                        continue
                    columns = (
                        "series_id, resolution, ts, value"
                        if table == "metric_samples"
                        else ("series_id, resolution, ts, count, sum, " + ", ".join(f"b{i}" for i in range(16)))
                    )
                    select = columns.replace("ts,", f"ts - {shift},", 1)
                    result = await session.execute(
                        text(
                            f"INSERT INTO {table} ({columns}) SELECT {select} FROM {table} "  # noqa: S608
                            "WHERE resolution = :r AND ts >= :since AND ts < :until"
                        ),
                        {"r": resolution, "since": end - day, "until": end},
                    )
                    copied += max(result.rowcount or 0, 0)
    return copied


async def database_size(runtime: Runtime, path: Path | None) -> int:
    async with runtime.database.transaction() as session:
        if path is not None:
            await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        else:
            result = await session.execute(text("SELECT pg_database_size(current_database())"))
            return int(result.scalar() or 0)
    assert path is not None
    return file_sizes(path)


def file_sizes(path: Path) -> int:
    """The SQLite file and its -wal/-shm companions."""
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))


async def row_counts(runtime: Runtime) -> dict[str, int]:
    out: dict[str, int] = {}
    async with runtime.database.session() as session:
        for table in ("metric_samples", "metric_histograms"):
            result = await session.execute(text(f"SELECT resolution, COUNT(*) FROM {table} GROUP BY resolution"))  # noqa: S608
            for resolution, count in result.all():
                out[f"{table}@{resolution}s"] = int(count)
        out["metric_series"] = int((await session.execute(text("SELECT COUNT(*) FROM metric_series"))).scalar() or 0)
    return out


async def timed_queries(
    client: httpx.AsyncClient, headers: dict[str, str], now: datetime, days: int, repeat: int
) -> list[dict[str, Any]]:
    span_month = timedelta(days=min(days, 30))
    cases = [
        ("24 h of http.requests, 1-min step", {"series": "http.requests", "step": 60}, timedelta(days=1)),
        (
            "24 h of http.latency p95, 1-min step",
            {"series": "http.latency", "fn": "p95", "step": 60},
            timedelta(days=1),
        ),
        ("month of http.requests, 1-h step", {"series": "http.requests", "step": 3600}, span_month),
        ("month of http.latency p95, 1-h step", {"series": "http.latency", "fn": "p95", "step": 3600}, span_month),
        (
            "24 h of usage.tokens by model, 1-min step",
            {"series": "usage.tokens", "group_by": "model", "step": 60},
            timedelta(days=1),
        ),
    ]
    out = []
    for name, params, span in cases:
        query = {**params, "since": (now - span).isoformat(), "until": now.isoformat()}
        timings = []
        cpu = []  # the process's CPU time per call (all threads): steadier than wall time on a loaded machine
        points = 0
        for _ in range(repeat):
            started, cpu_started = time.perf_counter(), time.process_time()
            response = await client.get("/api/v1/db/metrics", params=query, headers=headers)
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
            if response.status_code != 200:
                raise BenchError(f"{name}: {response.status_code} {response.text[:300]}")
            data = response.json()["data"]
            points = sum(len(line["points"]) for line in data["lines"])
        out.append(
            {
                "query": name,
                "points": points,
                "resolution": data["resolution"],
                "p50_ms": percentile(timings, 50),
                "p95_ms": percentile(timings, 95),
                "cpu_p50_ms": percentile(cpu, 50),
                "cpu_p95_ms": percentile(cpu, 95),
                "cpu_max_ms": max(cpu),
            }
        )
    return out


async def raw_baseline(runtime: Runtime, now: datetime, repeat: int) -> dict[str, Any]:
    """The 24-hour counter query read from raw rows (no roll-ups): the same SQL, resolution 10 s."""
    from trellis.metrics import repository as repo

    async with runtime.database.reader() as session:
        rows = await repo.series_of(session, "http.requests", "")
    lines = dict.fromkeys((row.id for row in rows), 0)
    until = int(now.timestamp())
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with runtime.database.reader() as session:
            await repo.counter_sums(session, lines, [(10, until - 86_400, until)], 60)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "query": "baseline: 24 h of http.requests from raw 10-s rows",
        "p50_ms": percentile(timings, 50),
        "p95_ms": percentile(timings, 95),
    }


async def run_one(
    label: str, mode: str, database_url: str, sqlite_path: Path | None, data_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    admin_key = new_admin_key()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    clock = ManualClock(start)
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        jwt_secret="bench-secret-0123456789-0123456789-0123456789",  # noqa: S106 - a throwaway database
        bootstrap_admin_key=admin_key,
        log_level="WARNING",
        log_json=True,
        rate_limits=unlimited_rate_limits("default", "ai"),
        metrics={"collect": False},
        alerts={"evaluate": False},
        workflow={"secret_keys": ["k0GzQ1bUoZqW7m5bX4JYc3o8a9vQe3kq2oH5sQxG9yA="]},
    )
    app = create_app(settings, clock=clock)
    runtime: Runtime = app.state.runtime
    await migrate.upgrade(runtime.database)
    await runtime.auth.bootstrap_admin()
    collector = runtime.monitoring.collector
    real = mode == "real"
    days = args.month_days if real else args.days
    traffic = Traffic(runtime, app.state.metrics, varied=args.varied or real)
    interval = settings.metrics.interval_seconds
    per_day = 86_400 // interval
    total = days * per_day
    cost = LoopCost()
    last_day: dict[str, float] = {}
    daily: list[dict[str, Any]] = []

    async def on_day(day: int, so_far: LoopCost) -> None:
        if day == days - 1:
            last_day.update(loop=so_far.loop_cpu, sample=so_far.sample_cpu, samples=so_far.samples)
        line: dict[str, Any] = {
            "day": day,
            "wall_s": round(so_far.wall_seconds, 1),
            "sample_cpu_ms": round(so_far.sample_cpu / so_far.samples * 1000, 3),
        }
        if real:  # the history's growth, day by day (no checkpoint: the file as the app leaves it)
            line["size_bytes"] = (
                file_sizes(sqlite_path) if sqlite_path is not None else await database_size(runtime, None)
            )
            line["rows"] = await row_counts(runtime)
            daily.append(line)
        print(f"  [{label} {mode}] {json.dumps(line)}", file=sys.stderr, flush=True)

    await live_through(runtime, clock, traffic, total, on_day=on_day, cost=cost)
    await collector.flush()
    simulated_seconds = cost.wall_seconds
    filled = 0
    if not real and args.days < args.month_days:
        filled = await fill_month(runtime, clock.now(), args.days, args.month_days)
    clock.advance(1)
    await collector.maintain()
    size = await database_size(runtime, sqlite_path)
    counts = await row_counts(runtime)
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await client.get("/api/v1/db/metrics", params={"series": "http.requests"}, headers=headers)  # warm
            queries = await timed_queries(client, headers, clock.now(), max(days, args.month_days), args.repeat)
            baseline = await raw_baseline(runtime, clock.now(), args.repeat)
    samples_last_day = cost.samples - int(last_day.get("samples", 0))
    cpu_per_sample = (cost.sample_cpu - last_day.get("sample", 0.0)) / max(samples_last_day, 1)
    loop_per_sample = (cost.loop_cpu - last_day.get("loop", 0.0)) / max(samples_last_day, 1)
    return {
        "backend": label,
        "mode": mode,
        "varied_traffic": traffic.varied,
        "days": days,
        "samples": total,
        "simulation_seconds": round(simulated_seconds, 1),
        "traffic_cpu_ms_per_sample": round(cost.traffic_cpu / max(cost.samples, 1) * 1000, 3),
        "month_cpu_ms_per_sample": round(cost.sample_cpu / max(cost.samples, 1) * 1000, 3),
        "month_loop_cpu_ms_per_sample": round(cost.loop_cpu / max(cost.samples, 1) * 1000, 3),
        "collector_loop_cpu_ms_per_sample": round(loop_per_sample * 1000, 3),
        "maintenance_runs": collector.stats.maintenance_runs,
        "rows_deleted_by_retention": collector.stats.rows_deleted,
        "daily": daily,
        "month_days": max(days, args.month_days),
        "rows_copied_from_the_last_day": filled,
        "size_bytes": size,
        "rows": counts,
        "queries": queries,
        "baseline": baseline,
        "collector_cpu_ms_per_sample": round(cpu_per_sample * 1000, 3),
        "collector_core_pct": round(cpu_per_sample / interval * 100, 4),
    }


def report(result: dict[str, Any]) -> None:
    how = (
        "every day sampled"
        if result["mode"] == "real"
        else f"filled to {result['month_days']} days with copies of the last day's roll-ups"
    )
    print(
        f"\n== {result['backend']}, --month {result['mode']}: {result['days']} simulated days, "
        f"{result['samples']:,} samples ({result['simulation_seconds']} s to simulate; {how})"
    )
    print(f"database size: {result['size_bytes'] / 1e6:.1f} MB")
    print(render_table(["rows", "count"], [[k, f"{v:,}"] for k, v in result["rows"].items()]))
    rows = [
        [
            q["query"],
            str(q["points"]),
            str(q.get("resolution", "10")),
            f"{q['p50_ms']:.1f}",
            f"{q['p95_ms']:.1f}",
            f"{q['cpu_p50_ms']:.1f} / {q['cpu_p95_ms']:.1f} / {q['cpu_max_ms']:.1f}",
        ]
        for q in result["queries"]
    ]
    b = result["baseline"]
    rows.append([b["query"], "", "10", f"{b['p50_ms']:.1f}", f"{b['p95_ms']:.1f}", ""])
    print(render_table(["query", "points", "resolution s", "p50 ms", "p95 ms", "CPU p50/p95/max ms"], rows))
    worst = max(q["p95_ms"] for q in result["queries"])
    print(f"slowest p95: {worst:.1f} ms (target < 50 ms on SQLite)")
    print(
        f"collector, last simulated day: {result['collector_cpu_ms_per_sample']:.2f} ms CPU per sample = "
        f"{result['collector_core_pct']:.3f}% of one core at the 10 s interval (target < 1%); with retention "
        f"{result['collector_loop_cpu_ms_per_sample']:.2f} ms"
    )
    print(
        f"whole run: {result['month_cpu_ms_per_sample']:.2f} ms CPU per sample "
        f"({result['month_loop_cpu_ms_per_sample']:.2f} with retention; {result['maintenance_runs']} retention runs "
        f"deleted {result['rows_deleted_by_retention']:,} rows); making the traffic: "
        f"{result['traffic_cpu_ms_per_sample']:.2f} ms per sample (not the collector's)"
    )


def compare(results: list[dict[str, Any]]) -> None:
    """The real month beside the copy-based one of the same backend."""
    by = {(r["backend"], r["mode"]): r for r in results}
    for backend in ("sqlite", "postgresql"):
        real, copy = by.get((backend, "real")), by.get((backend, "copy"))
        if real is None or copy is None:
            continue
        print(f"\n== {backend}: a real month against one day copied to a month")
        rows = [["database size MB", f"{real['size_bytes'] / 1e6:.1f}", f"{copy['size_bytes'] / 1e6:.1f}"]]
        for key in sorted(set(real["rows"]) | set(copy["rows"])):
            rows.append([key, f"{real['rows'].get(key, 0):,}", f"{copy['rows'].get(key, 0):,}"])
        for mine, theirs in zip(real["queries"], copy["queries"], strict=True):
            rows.append(
                [
                    f"{mine['query']} p50/p95 ms",
                    f"{mine['p50_ms']:.1f} / {mine['p95_ms']:.1f}",
                    f"{theirs['p50_ms']:.1f} / {theirs['p95_ms']:.1f}",
                ]
            )
        rows.append(
            [
                "collector CPU ms per sample (last day)",
                f"{real['collector_cpu_ms_per_sample']:.2f}",
                f"{copy['collector_cpu_ms_per_sample']:.2f}",
            ]
        )
        print(render_table(["", "real month", "copied month"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--month",
        choices=("copy", "real"),
        default="copy",
        help="copy: simulate --days, fill the rest with copies of the last day's roll-ups; real: simulate "
        "all --month-days sample by sample (then, unless --no-copy-baseline, a 1-day copy-based run to compare)",
    )
    parser.add_argument("--days", type=int, default=2, help="days simulated sample by sample (--month copy)")
    parser.add_argument(
        "--month-days", type=int, default=30, help="the history's length: filled (copy) or simulated (real)"
    )
    parser.add_argument("--no-copy-baseline", action="store_true", help="--month real without the copy-based run")
    parser.add_argument(
        "--varied", action="store_true", help="the real month's varied traffic in --month copy too (default there)"
    )
    parser.add_argument("--repeat", type=int, default=30, help="calls per query")
    parser.add_argument("--postgres", help="USER@HOST:PORT: also run on a fresh PostgreSQL database")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    stop_on_signals()
    modes = [args.month]
    if args.month == "real" and not args.no_copy_baseline:
        # The baseline first: short, so its numbers exist even if the month is stopped.
        args.days, args.varied = 1, True
        modes = ["copy", "real"]
    began = datetime.now(UTC)
    results = []
    try:
        for mode in modes:
            if not args.no_sqlite:
                with tempfile.TemporaryDirectory(prefix="trellis-metrics-bench-") as tmp:
                    path = Path(tmp) / "trellis.db"
                    url = f"sqlite+aiosqlite:///{path}"
                    results.append(asyncio.run(run_one("sqlite", mode, url, path, Path(tmp), args)))
                    report(results[-1])
            if args.postgres:
                check_postgres(args.postgres, "pass --postgres USER@HOST:PORT")
                with postgres_database(args.postgres) as name, tempfile.TemporaryDirectory() as tmp:
                    url = f"postgresql+asyncpg://{args.postgres}/{name}"
                    results.append(asyncio.run(run_one("postgresql", mode, url, None, Path(tmp), args)))
                    report(results[-1])
    except BenchError as exc:
        sys.exit(f"error: {exc}")
    compare(results)
    path = write_results("metrics_history", began, {**result_header("metrics_history", began), "results": results})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
