"""``trellis metrics show|series`` and ``trellis alerts …``, in-process against a real embedded data
directory whose history a runtime's collector wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.cli.test_commands import cli, flat, ok_json
from trellis.cli.metrics import BLOCKS, sparkline
from trellis.kit.http_metrics import HttpMetrics
from trellis.runtime import build_runtime
from trellis.settings import load_settings


def record_history() -> None:
    """Two samples ten seconds apart with HTTP traffic between them, as a server would write."""

    async def work() -> None:
        runtime = build_runtime(load_settings())
        try:
            http = HttpMetrics(runtime.registry)
            collector = runtime.monitoring.collector
            now = runtime.clock.now()
            await collector.sample(now)
            for status in (200, 200, 200, 500):
                http.observe("GET", "/api/v1/db/logs", status, 0.02)
            from datetime import timedelta

            await collector.sample(now + timedelta(seconds=10))
        finally:
            await runtime.close()

    asyncio.run(work())


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == BLOCKS
    assert sparkline([None, 5, 5]) == " " + BLOCKS[3] * 2
    assert len(sparkline([float(i) for i in range(500)], width=50)) == 50


def test_metrics_show(cli_data_dir: Path) -> None:
    record_history()
    result = cli("metrics", "show", "http.requests", "--since", "10m", "--step", "10", "--by", "status")
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert "http.requests" in text
    assert "status=200" in text
    assert "status=500" in text
    assert any(block in result.stdout for block in BLOCKS)
    data = ok_json("metrics", "show", "http.requests", "--since", "10m", "--step", "1m", "--label", "status_class:5xx")
    assert data["lines"][0]["summary"]["total"] == 1.0
    bad = cli("metrics", "show", "no.such", "--since", "10m")
    assert bad.exit_code == 1
    assert "unknown series" in flat(bad.output)
    names = {row["name"] for row in ok_json("metrics", "series")}
    assert {"http.requests", "usage.tokens"} <= names


def test_alerts_commands(cli_data_dir: Path) -> None:
    rules = ok_json("alerts", "rules")
    builtin = {row["builtin"]: row["id"] for row in rules}
    assert "error_rate" in builtin
    listed = cli("alerts", "list")
    assert listed.exit_code == 0, listed.output
    assert "Nothing pending or firing" in listed.stdout
    silenced = cli("alerts", "silence", builtin["disk_space"], "--for", "30m", "--comment", "moving disks")
    assert silenced.exit_code == 0, silenced.output
    assert "Silenced" in silenced.stdout
    again = ok_json("alerts", "rules")
    assert next(r for r in again if r["builtin"] == "disk_space")["silenced_until"] is not None
    breaker = next(r for r in again if r["builtin"] == "breaker_open")
    assert breaker["group_by"] == ["endpoint"]
    one = cli("alerts", "silence", breaker["id"], "--for", "1h", "--match", "endpoint=openai:http://a.test")
    assert one.exit_code == 0, one.output
    assert "where endpoint=openai:http://a.test" in flat(one.stdout)
    bad_match = cli("alerts", "silence", breaker["id"], "--match", "endpoint")
    assert bad_match.exit_code == 1
    assert "LABEL=VALUE" in flat(bad_match.output)
    unknown_label = cli("alerts", "silence", breaker["id"], "--match", "model=x")
    assert unknown_label.exit_code == 1
    assert "no label 'model'" in flat(unknown_label.output)
    unknown = cli("alerts", "silence", "alr_nope", "--for", "5m")
    assert unknown.exit_code == 1
    assert "not found" in flat(unknown.output)
