"""GET /api/v1/db/metrics over samples the real collector wrote from real traffic (both databases)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Harness


async def sample(h: Harness) -> int:
    return await h.runtime.monitoring.collector.sample()


async def traffic(h: Harness, headers: dict[str, str], n: int) -> None:
    for _ in range(n):
        assert (await h.client.get("/api/v1/db/logs", headers=headers)).status_code == 200


async def query(h: Harness, headers: dict[str, str], **params: Any) -> Any:
    return await h.client.get("/api/v1/db/metrics", params=params, headers=headers)


async def test_requests_are_counted_per_interval_and_summed(h: Harness, admin_headers: dict[str, str]) -> None:
    await sample(h)  # a baseline
    h.clock.advance(10)
    await traffic(h, admin_headers, 3)
    await sample(h)
    h.clock.advance(10)
    await traffic(h, admin_headers, 2)
    await sample(h)
    h.clock.advance(10)
    response = await query(
        h,
        admin_headers,
        series="http.requests",
        label="route_class:db",
        since=(h.clock.now() - timedelta(minutes=5)).isoformat(),
        step=10,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["kind"], data["resolution"], data["step"]) == ("counter", 10, 10)
    (line,) = data["lines"]
    values = [v for _, v in line["points"] if v]
    assert values == [3.0, 2.0]
    assert line["summary"]["total"] == 5.0
    assert data["instances"] == 1


async def test_latency_percentiles_come_from_merged_buckets(h: Harness, admin_headers: dict[str, str]) -> None:
    await sample(h)
    h.clock.advance(10)
    await traffic(h, admin_headers, 4)
    await sample(h)
    h.clock.advance(10)
    response = await query(h, admin_headers, series="http.latency", label="route_class:db", fn="p95", step=60)
    assert response.status_code == 200, response.text
    line = response.json()["data"]["lines"][0]
    assert line["summary"]["total"] == 4
    assert line["summary"]["p95"] is not None
    assert 0 < line["summary"]["p95"] <= 30


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"series": "no.such"}, 400, "series"),
        (
            {"series": "http.requests", "step": 10, "since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
            400,
            "step",
        ),
        ({"series": "http.requests", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 400, "since"),
        ({"series": "http.requests", "fn": "p95"}, 400, "fn"),
        ({"series": "http.requests", "label": "nope:1"}, 400, "label"),
        ({"series": "http.requests", "label": "nocolon"}, 400, "label"),
        ({"series": "http.requests", "group_by": "nope"}, 400, "group_by"),
        ({"series": "http.requests", "step": 5}, 400, "step"),
    ],
)
async def test_bad_queries_name_the_field(
    h: Harness, admin_headers: dict[str, str], params: dict[str, Any], status: int, field: str
) -> None:
    response = await query(h, admin_headers, **params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert [f["field"] for f in body["error"]["details"]["fields"]] == [field]


async def test_step_too_small_says_the_maximum(h: Harness, admin_headers: dict[str, str]) -> None:
    response = await query(
        h, admin_headers, series="http.requests", step=10, since="2026-01-01T00:00:00Z", until="2026-02-01T00:00:00Z"
    )
    details = response.json()["error"]["details"]
    assert details["max_points"] == 1500
    assert details["min_step"] == 1786  # 31 days / 1500 points, rounded up
    assert "1500" in response.json()["error"]["message"]


async def test_an_unfiltered_query_reads_the_totals_and_agrees_with_the_label_sets(
    h: Harness, admin_headers: dict[str, str]
) -> None:
    await sample(h)
    h.clock.advance(10)
    await traffic(h, admin_headers, 3)
    assert (await h.client.get("/api/v1/nope", headers=admin_headers)).status_code == 404
    await sample(h)
    h.clock.advance(10)
    since = (h.clock.now() - timedelta(minutes=5)).isoformat()
    whole = (await query(h, admin_headers, series="http.requests", since=since, step=60)).json()["data"]
    grouped = (await query(h, admin_headers, series="http.requests", since=since, step=60, group_by="status")).json()[
        "data"
    ]
    by_status = {line["labels"]["status"]: line["summary"]["total"] for line in grouped["lines"]}
    assert by_status["404"] == 1.0
    assert whole["lines"][0]["summary"]["total"] == sum(by_status.values())
    assert whole["lines"][0]["labels"] == {}
