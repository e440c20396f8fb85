"""Two runtimes sharing one PostgreSQL database, as two replicas: each writes its own samples and a
query sums them; exactly one evaluates alerts (the lease), and the other takes over when it goes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.alerts.support import RULES, ok_data, sample, traffic
from tests.conftest import ADMIN_KEY, Harness

ADMIN = Harness.auth(ADMIN_KEY)


async def test_queries_sum_both_replicas(make_harness: Any, postgres_url: str) -> None:
    async with make_harness(database_url=postgres_url) as one, make_harness(database_url=postgres_url) as two:
        assert one.runtime.monitoring.collector.instance != two.runtime.monitoring.collector.instance
        for h in (one, two):
            await sample(h)
            h.clock.advance(10)
        await traffic(one, ADMIN, 3)
        await traffic(two, ADMIN, 4)
        for h in (one, two):
            await sample(h)
        since = (min(one.clock.now(), two.clock.now()) - timedelta(minutes=5)).isoformat()
        for reader in (one, two):
            answer = ok_data(
                await reader.client.get(
                    "/api/v1/db/metrics",
                    params={"series": "http.requests", "label": "route_class:db", "since": since, "step": 60},
                    headers=ADMIN,
                )
            )
            assert answer["instances"] == 2
            assert answer["lines"][0]["summary"]["total"] == 7.0
            latency = ok_data(
                await reader.client.get(
                    "/api/v1/db/metrics",
                    params={"series": "http.latency", "label": "route_class:db", "since": since, "step": 60},
                    headers=ADMIN,
                )
            )
            assert latency["lines"][0]["summary"]["total"] == 7.0  # observations of both, buckets merged


async def test_one_evaluator_at_a_time(make_harness: Any, postgres_url: str) -> None:
    async with make_harness(database_url=postgres_url) as one, make_harness(database_url=postgres_url) as two:
        rule = {
            "name": "any db traffic",
            "series": "http.requests",
            "condition": {"type": "threshold", "op": ">", "value": 0, "window_seconds": 60},
        }
        ok_data(await one.client.post(RULES, json=rule, headers=ADMIN), 201)
        first, second = one.runtime.monitoring.evaluator, two.runtime.monitoring.evaluator
        assert await first.evaluate_once() is not None
        assert await second.evaluate_once() is None  # the lease is the first's
        assert await first.evaluate_once() is not None  # renewing it
        assert first.leading
        assert not second.leading

        # The first goes away without a word: once its lease runs out, the second takes over...
        two.clock.advance(first.settings.lease_seconds + 1)
        assert await second.evaluate_once() is not None
        # ... and the first, back with an old view of the clock, cannot write.
        assert await first.evaluate_once() is None
        assert not first.leading

        # A graceful stop hands the lease over at once.
        await second.stop()
        one.clock.advance((two.clock.now() - one.clock.now()).total_seconds() + 1)  # one's clock past two's
        assert await first.evaluate_once() is not None
