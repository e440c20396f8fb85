"""The standard stack's files: Prometheus rules checked and unit-tested by promtool (Debian's
``prometheus`` package), equivalent to the built-in alert rules, and every metric the rules and the
Grafana dashboard name is one Trellis exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import Harness
from trellis.alerts.defaults import builtin_rules
from trellis.settings import AlertsSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "trellis-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "trellis-dashboard.json"
PROMTOOL = shutil.which("promtool")


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    # A failure, not a skip: a missing checker must not pass for checked rules. .ci/run installs it.
    assert PROMTOOL is not None, "promtool is missing: apt-get install prometheus (see deploy/prometheus/check.sh)"
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "trellis-rules.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=RULES.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_rules_match_the_builtin_ones() -> None:
    defaults = {rule.builtin: rule for rule in builtin_rules(AlertsSettings())}
    by_builtin = {rule["labels"]["builtin"]: rule for rule in rules()}  # type: ignore[index]
    assert set(by_builtin) == set(defaults)
    for name, rule in by_builtin.items():
        builtin = defaults[name]
        assert rule["labels"]["severity"] == builtin.severity  # type: ignore[index]
        threshold = builtin.condition["value"]
        assert re.search(rf"[<>]\s*{re.escape(format(threshold, 'g'))}\b", str(rule["expr"])), (name, rule["expr"])
        expected_for = f"{builtin.for_seconds // 60}m" if builtin.for_seconds else None
        assert rule.get("for") == expected_for, name


def metric_names(expression: str) -> set[str]:
    return {name.removesuffix("_bucket") for name in re.findall(r"\btrellis_[a-z_]+", expression)}


async def test_every_metric_named_is_exported(harness: Harness, admin_headers: dict[str, str]) -> None:
    await harness.client.get("/api/v1/db/logs", headers=admin_headers)
    harness.runtime.gateway.metrics.breaker_state.labels("x").set(0)
    harness.runtime.gateway.metrics.log_dropped.labels("queue_full").inc(0)
    harness.runtime.gateway.metrics.requests.labels("m", "p", "rest", "ok").inc(0)
    harness.runtime.gateway.metrics.tokens.labels("m", "prompt").inc(0)
    harness.runtime.gateway.metrics.latency.labels("m", "p").observe(0.1)
    harness.runtime.gateway.metrics.cache.labels("miss").inc(0)
    harness.runtime.workflow_parts.metrics.runs.labels("succeeded").inc(0)
    exported = (await harness.client.get("/metrics")).text
    names = {line.split("{")[0].split(" ")[0] for line in exported.splitlines() if line and not line.startswith("#")}
    names = {n.removesuffix("_bucket") for n in names}
    used: set[str] = set()
    for rule in rules():
        used |= metric_names(str(rule["expr"]))
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= metric_names(target["expr"])
    assert used - names == set()
