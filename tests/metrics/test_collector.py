"""The collector with an injected clock, on both databases: roll-ups written as periods end and
equal to the raw samples they cover, retention deleting each resolution's old rows, the collector
falling behind (it skips, counts and shows the gap, and totals stay right), and a blocked database
write that never blocks requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text

from tests.alerts.support import ok_data, traffic
from tests.conftest import ADMIN_KEY, Harness
from trellis.metrics.collector import MetricsCollector

ADMIN = Harness.auth(ADMIN_KEY)


async def rows(h: Harness, resolution: int) -> dict[int, float]:
    """ts -> summed value of the db route class's request counters at ``resolution``."""
    async with h.runtime.database.session() as session:
        result = await session.execute(
            text(
                "SELECT s.ts, SUM(s.value) FROM metric_samples s JOIN metric_series m ON m.id = s.series_id "
                "WHERE m.name = 'http.requests' AND m.labels LIKE '%\"route_class\":\"db\"%' "
                "AND s.resolution = :r GROUP BY s.ts ORDER BY s.ts"
            ),
            {"r": resolution},
        )
        return {int(ts): float(total) for ts, total in result.all()}


def to_next_hour(h: Harness) -> None:
    now = h.clock.now()
    h.clock.advance((3600 - int(now.timestamp()) % 3600) + 0.5 - (now.timestamp() % 1))


async def test_rollups_and_retention(h: Harness) -> None:
    collector: MetricsCollector = h.runtime.monitoring.collector
    to_next_hour(h)
    await collector.sample()
    for _ in range(18):  # three minutes of 10-second samples, 1 request in each
        h.clock.advance(10)
        await traffic(h, ADMIN, 1)
        await collector.sample()
    raw, minutes = await rows(h, 10), await rows(h, 60)
    assert sum(raw.values()) == 18
    # Minutes that ended have their roll-up; the one in progress does not yet.
    assert len(minutes) == 2
    for start, total in minutes.items():
        assert total == sum(v for ts, v in raw.items() if start <= ts < start + 60)
    assert await rows(h, 3600) == {}

    # A query at 1-minute steps reads the roll-ups, then the raw tail: nothing lost, nothing twice.
    since = datetime.fromtimestamp(min(raw), UTC).isoformat()
    answer = ok_data(
        await h.client.get(
            "/api/v1/db/metrics",
            params={"series": "http.requests", "label": "route_class:db", "since": since, "step": 60},
            headers=ADMIN,
        )
    )
    assert answer["resolution"] == 60
    assert answer["lines"][0]["summary"]["total"] == 18

    # Two days later: the hour's roll-up is written, raw rows are past their 36 hours.
    h.clock.advance(2 * 86_400)
    await collector.sample()
    hours = await rows(h, 3600)
    assert sum(hours.values()) == 18
    assert await collector.maintain() is not None  # this process holds the maintenance lease
    assert await rows(h, 10) == {}
    assert sum((await rows(h, 60)).values()) == 18
    until = datetime.fromtimestamp(max(raw) + 60, UTC).isoformat()
    old = ok_data(
        await h.client.get(
            "/api/v1/db/metrics",
            params={"series": "http.requests", "label": "route_class:db", "since": since, "until": until, "step": 60},
            headers=ADMIN,
        )
    )
    assert old["resolution"] == 60
    assert old["lines"][0]["summary"]["total"] == 18

    # Past the minutes' 14 days only the hour is left; past 90 days nothing.
    h.clock.advance(15 * 86_400)
    await collector.sample()
    await collector.maintain()
    assert await rows(h, 60) == {}
    assert sum((await rows(h, 3600)).values()) == 18
    h.clock.advance(90 * 86_400)
    await collector.sample()
    await collector.maintain()
    assert await rows(h, 3600) == {}


async def test_falling_behind_skips_counts_and_shows_the_gap(make_harness: Any) -> None:
    async with make_harness() as h:
        collector: MetricsCollector = h.runtime.monitoring.collector
        await collector.run_once()
        h.clock.advance(10)
        await traffic(h, ADMIN, 2)
        h.clock.advance(50)  # six intervals since the last sample: the loop wakes up five late
        await traffic(h, ADMIN, 3)
        await collector.run_once()
        assert collector.stats.skipped == 5
        status = ok_data(await h.client.get("/api/v1/db/metrics/collector", headers=ADMIN))
        assert status["skipped"] == 5
        assert status["last_gap"]["intervals"] == 5
        since = (h.clock.now() - timedelta(minutes=5)).isoformat()
        answer = ok_data(
            await h.client.get(
                "/api/v1/db/metrics",
                params={"series": "http.requests", "label": "route_class:db", "since": since, "step": 10},
                headers=ADMIN,
            )
        )
        # Nothing lost: the late sample carries every request of the skipped intervals.
        assert answer["lines"][0]["summary"]["total"] == 5
        skipped = ok_data(
            await h.client.get(
                "/api/v1/db/metrics", params={"series": "collector.skipped", "since": since, "step": 10}, headers=ADMIN
            )
        )
        assert skipped["lines"][0]["summary"]["total"] == 5


async def test_a_blocked_write_never_blocks_requests(make_harness: Any, postgres_url: str) -> None:
    async with make_harness(database_url=postgres_url) as h:
        collector: MetricsCollector = h.runtime.monitoring.collector
        await collector.sample()
        h.clock.advance(10)
        await traffic(h, ADMIN, 1)
        locker = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE metric_samples IN ACCESS EXCLUSIVE MODE")
            write = asyncio.create_task(collector.sample())
            await asyncio.sleep(0)
            # The collector waits on the lock; requests are answered meanwhile.
            for _ in range(5):
                response = await asyncio.wait_for(h.client.get("/api/v1/db/logs", headers=ADMIN), timeout=5)
                assert response.status_code == 200
            assert not write.done()
            await transaction.rollback()
        finally:
            await locker.close()
        assert await asyncio.wait_for(write, timeout=10) > 0


async def test_each_sample_goes_out_on_the_dashboard_feed(harness: Harness) -> None:
    h = harness
    live = h.runtime.bus.subscribe()
    await live.add("dashboard")
    collector: MetricsCollector = h.runtime.monitoring.collector
    await collector.sample()
    h.clock.advance(10)
    await traffic(h, ADMIN, 2)
    await collector.sample()
    messages = []
    while (item := live.get_nowait()) is not None:
        messages.append(item.message())  # type: ignore[union-attr]
    await live.aclose()
    last = messages[-1]
    assert (last["component"], last["event"]) == ("dashboard", "metrics_sample")
    assert last["data"]["instance"] == collector.instance
    assert last["data"]["requests"] == 2.0
    assert last["data"]["p95_seconds"] is not None
