"""The grouped usage query (``usage.tokens`` by model, the ``24 h tokens by model`` row of
``bench/metrics_history.py``) pinned against what the traffic put in, on both databases: each model's
line has, minute by minute, exactly the tokens that model's calls left in that minute, and its total
is their sum; coarser steps add the same minutes up. Whatever makes the query cheaper must keep these
numbers. The traffic is the benchmark's (``bench/_metrics_month.py``), through the collector's real
loop: the range spans minute roll-ups and the raw 10-second rows of the minutes not rolled up yet."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.conftest import ADMIN_KEY, Harness
from tests.metrics.test_month import month

MINUTES = 30


async def grouped(h: Harness, since: int, until: int, step: int) -> dict[str, Any]:
    response = await h.client.get(
        "/api/v1/db/metrics",
        params={
            "series": "usage.tokens",
            "group_by": "model",
            "step": step,
            "since": datetime.fromtimestamp(since, UTC).isoformat(),
            "until": datetime.fromtimestamp(until, UTC).isoformat(),
        },
        headers=h.auth(ADMIN_KEY),
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_tokens_by_model_are_what_each_model_was_given(
    make_harness: Callable[..., Any], database_url: str
) -> None:
    async with make_harness(database_url=database_url) as h:
        collector = h.runtime.monitoring.collector
        now = h.clock.now().timestamp()
        h.clock.advance(3600 - now % 3600 + 0.5)  # whole minutes from the top of an hour
        start = int(h.clock.now().timestamp())
        traffic = month.Traffic(h.runtime, h.app.state.metrics, ledger=True)
        await month.live_through(h.runtime, h.clock, traffic, MINUTES * 60 // collector.interval)
        assert traffic.ledger is not None
        by_model: dict[str, dict[int, float]] = defaultdict(dict)
        for (minute, model), tokens in traffic.ledger.tokens_by_model.items():
            by_model[model][minute] = float(tokens)
        assert set(by_model) == set(month.MODELS)
        end = start + MINUTES * 60

        data = await grouped(h, start, end, 60)
        assert (data["resolution"], data["step"]) == (60, 60)
        lines = {line["labels"]["model"]: line for line in data["lines"]}
        assert set(lines) == set(month.MODELS)
        minutes = list(range(start, end, 60))
        for model, line in lines.items():
            assert [ts for ts, _ in line["points"]] == minutes
            assert {ts: v for ts, v in line["points"] if v} == by_model[model]
            assert line["summary"]["total"] == sum(by_model[model].values())
            assert line["summary"]["current"] == line["points"][-1][1]
            assert line["summary"]["max"] == max(v for _, v in line["points"])
            assert line["summary"]["min"] == min(v for _, v in line["points"])

        # Ten-minute steps: the same minutes, added up.
        coarse = await grouped(h, start, end, 600)
        for line in coarse["lines"]:
            expected: dict[int, float] = defaultdict(float)
            for minute, tokens in by_model[line["labels"]["model"]].items():
                expected[minute // 600 * 600] += tokens
            assert {ts: v for ts, v in line["points"] if v} == dict(expected)
            assert line["summary"]["total"] == sum(by_model[line["labels"]["model"]].values())
