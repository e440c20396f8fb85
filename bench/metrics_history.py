"""The metric history: database size after a simulated month, query latency, the collector's CPU.

One in-process Trellis (the real app, the real collector, a clock the script moves) on a fresh
SQLite file (and, with ``--postgres``, a fresh PostgreSQL database) lives through ``--days`` of
simulated traffic at the default 10-second interval: each interval a few dozen HTTP requests over
eight routes and five statuses with latencies, model calls of three users on two models, gauges
that move now and then; the collector samples it, rolls it up and (every 10 minutes, as in
production) applies retention. Then:

* **size**: the database file (SQLite, after a checkpoint) or ``pg_database_size``, and rows per
  resolution;
* **queries**: ``GET /api/v1/db/metrics`` through the app (auth included) for 24 hours at 1-minute
  steps and for the whole month at 1-hour steps, counters and p95 latency; p50/p95 of ``--repeat``
  calls each. Baseline in the same run: the 24-hour counter query read from the raw 10-second rows
  (what the history would cost without roll-ups);
* **collector CPU**: the process CPU time (all threads: aiosqlite's included) per sample during the
  last simulated day, as a share of one core at the 10-second interval.

    .venv/bin/python bench/metrics_history.py                  # SQLite, 30 days (several minutes)
    .venv/bin/python bench/metrics_history.py --days 3         # a quick look
    .venv/bin/python bench/metrics_history.py --postgres postgres@127.0.0.1:5432

Targets (issue 16): queries p95 under 50 ms on SQLite, collector under 1% of a core; the size is
reported (a previous attempt measured 456 MB for a month).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
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
from trellis.app import create_app
from trellis.episodic.schemas import CallRecord
from trellis.kit.clock import ManualClock
from trellis.runtime import Runtime
from trellis.settings import Settings
from trellis.storage import migrate

ROUTES = (
    "/api/v1/ai/generate",
    "/v1/chat/completions",
    "/api/context/search",
    "/api/context",
    "/api/v1/workflow/execute",
    "/api/v1/db/logs",
    "/graphql",
    "/health",
)
STATUSES = ((200, 0.9), (404, 0.04), (400, 0.03), (429, 0.02), (500, 0.01))
MODELS = ("smollm2", "remote-gpt")
USERS = ("usr_alice", "usr_bob", "usr_carol")


def simulate_interval(runtime: Runtime, rng: random.Random, second_of_month: int) -> None:
    """One 10-second interval of traffic, recorded where the real code records it."""
    http = runtime.monitoring_http  # type: ignore[attr-defined]
    # Busier by day than by night.
    load = 0.5 + 0.5 * math.sin(2 * math.pi * (second_of_month % 86_400) / 86_400)
    for _ in range(int(20 + 40 * load)):
        route = rng.choice(ROUTES)
        status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        http.observe("POST", route, status, rng.lognormvariate(-4.5, 1.0))
    gateway = runtime.gateway.metrics
    for _ in range(rng.randint(0, 3)):
        model = rng.choice(MODELS)
        user = rng.choice(USERS)
        prompt, completion = rng.randint(20, 400), rng.randint(5, 200)
        gateway.requests.labels(model, "openai", "rest", "ok").inc()
        gateway.tokens.labels(model, "prompt").inc(prompt)
        gateway.tokens.labels(model, "completion").inc(completion)
        gateway.latency.labels(model, "openai").observe(rng.lognormvariate(0, 0.7))
        gateway.cache.labels(rng.choice(("miss", "miss", "hit_l1"))).inc()
        runtime.monitoring.usage.record(
            CallRecord(
                owner_id=user,
                door="rest",
                requested_model=model,
                served_model=model,
                status="ok",
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost=(prompt + 2 * completion) / 1e6,
            )
        )
    if rng.random() < 0.05:
        runtime.live_metrics.ws_connections.set(rng.randint(0, 40))
    if rng.random() < 0.001:
        gateway.breaker_state.labels("openai:http://remote").set(rng.choice((0, 1)))


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
        points = 0
        for _ in range(repeat):
            started = time.perf_counter()
            response = await client.get("/api/v1/db/metrics", params=query, headers=headers)
            timings.append((time.perf_counter() - started) * 1000)
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
    label: str, database_url: str, sqlite_path: Path | None, data_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from trellis.kit.http_metrics import HttpMetrics  # noqa: F401 - the app builds it

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
    runtime.monitoring_http = app.state.metrics  # type: ignore[attr-defined]
    await migrate.upgrade(runtime.database)
    await runtime.auth.bootstrap_admin()
    collector = runtime.monitoring.collector
    rng = random.Random(16)
    interval = settings.metrics.interval_seconds
    total = args.days * 86_400 // interval
    maintenance_every = settings.metrics.maintenance_seconds // interval
    started = time.perf_counter()
    cpu_last_day = 0.0
    samples_last_day = 0
    last_day_from = total - 86_400 // interval
    for i in range(total):
        simulate_interval(runtime, rng, i * interval)
        clock.advance(interval)
        cpu = time.process_time()
        await collector.sample()
        if i % maintenance_every == 0:
            await collector.maintain()
        if i >= last_day_from:
            cpu_last_day += time.process_time() - cpu
            samples_last_day += 1
        if i and i % (86_400 // interval) == 0:
            day = i * interval // 86_400
            print(f"  [{label}] day {day}/{args.days}: {time.perf_counter() - started:.0f} s so far", file=sys.stderr)
    await collector.flush()
    simulated_seconds = time.perf_counter() - started
    filled = 0
    if args.days < args.month_days:
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
            queries = await timed_queries(client, headers, clock.now(), args.days, args.repeat)
            baseline = await raw_baseline(runtime, clock.now(), args.repeat)
    cpu_per_sample = cpu_last_day / max(samples_last_day, 1)
    return {
        "backend": label,
        "days": args.days,
        "samples": total,
        "simulation_seconds": round(simulated_seconds, 1),
        "month_days": max(args.days, args.month_days),
        "rows_copied_from_the_last_day": filled,
        "size_bytes": size,
        "rows": counts,
        "queries": queries,
        "baseline": baseline,
        "collector_cpu_ms_per_sample": round(cpu_per_sample * 1000, 3),
        "collector_core_pct": round(cpu_per_sample / interval * 100, 4),
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"\n== {result['backend']}: {result['days']} simulated days, {result['samples']} samples "
        f"({result['simulation_seconds']} s to simulate)"
    )
    print(f"database size: {result['size_bytes'] / 1e6:.1f} MB")
    print(render_table(["rows", "count"], [[k, f"{v:,}"] for k, v in result["rows"].items()]))
    rows = [
        [q["query"], str(q.get("resolution", "10")), f"{q['p50_ms']:.1f}", f"{q['p95_ms']:.1f}"]
        for q in result["queries"]
    ]
    b = result["baseline"]
    rows.append([b["query"], "10", f"{b['p50_ms']:.1f}", f"{b['p95_ms']:.1f}"])
    print(render_table(["query", "resolution s", "p50 ms", "p95 ms"], rows))
    worst = max(q["p95_ms"] for q in result["queries"])
    print(f"slowest p95: {worst:.1f} ms (target < 50 ms on SQLite)")
    print(
        f"collector: {result['collector_cpu_ms_per_sample']:.2f} ms CPU per sample = "
        f"{result['collector_core_pct']:.3f}% of one core at the 10 s interval (target < 1%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=2, help="days simulated sample by sample")
    parser.add_argument(
        "--month-days", type=int, default=30, help="fill the history to this many days with the last day's roll-ups"
    )
    parser.add_argument("--repeat", type=int, default=30, help="calls per query")
    parser.add_argument("--postgres", help="USER@HOST:PORT: also run on a fresh PostgreSQL database")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    stop_on_signals()
    began = datetime.now(UTC)
    results = []
    try:
        if not args.no_sqlite:
            with tempfile.TemporaryDirectory(prefix="trellis-metrics-bench-") as tmp:
                path = Path(tmp) / "trellis.db"
                results.append(asyncio.run(run_one("sqlite", f"sqlite+aiosqlite:///{path}", path, Path(tmp), args)))
                report(results[-1])
        if args.postgres:
            check_postgres(args.postgres, "pass --postgres USER@HOST:PORT")
            with postgres_database(args.postgres) as name, tempfile.TemporaryDirectory() as tmp:
                url = f"postgresql+asyncpg://{args.postgres}/{name}"
                results.append(asyncio.run(run_one("postgresql", url, None, Path(tmp), args)))
                report(results[-1])
    except BenchError as exc:
        sys.exit(f"error: {exc}")
    path = write_results("metrics_history", began, {**result_header("metrics_history", began), "results": results})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
