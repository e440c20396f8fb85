"""The alert rules API: ownership, validation (400 naming the field), the SSRF guard on webhook
URLs, built-in rules (administrators; switched off, never deleted), silences (both databases)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.alerts.support import RULES, SILENCES, fields_of, ok_data
from tests.conftest import Harness

TOKENS_RULE: dict[str, Any] = {
    "name": "my tokens",
    "series": "usage.tokens",
    "condition": {"type": "threshold", "op": ">", "value": 1000, "window_seconds": 3600},
}


async def test_a_user_owns_their_rules(h: Harness, alice: dict[str, str], bob: dict[str, str]) -> None:
    created = ok_data(await h.client.post(RULES, json=TOKENS_RULE, headers=alice), 201)
    assert created["state"] == "inactive"
    assert created["webhook_secret"] is None
    assert created["condition"] == {**TOKENS_RULE["condition"]}
    assert created["user_id"] == created["owner_id"]  # a developer's usage rule watches their own usage
    rule_id = created["id"]
    assert [r["id"] for r in ok_data(await h.client.get(RULES, headers=alice))] == [rule_id]
    assert ok_data(await h.client.get(RULES, headers=bob)) == []
    for method, path, body in [
        ("GET", f"{RULES}/{rule_id}", None),
        ("PATCH", f"{RULES}/{rule_id}", {"enabled": False}),
        ("DELETE", f"{RULES}/{rule_id}", None),
    ]:
        response = await h.client.request(method, path, json=body, headers=bob)
        assert response.status_code == 404, (method, response.text)
    silence = await h.client.post(SILENCES, json={"rule_id": rule_id, "duration_seconds": 60}, headers=bob)
    assert silence.status_code == 404
    patched = ok_data(await h.client.patch(f"{RULES}/{rule_id}", json={"for_seconds": 30}, headers=alice))
    assert patched["for_seconds"] == 30
    ok_data(await h.client.delete(f"{RULES}/{rule_id}", headers=alice))
    assert (await h.client.get(f"{RULES}/{rule_id}", headers=alice)).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"series": "no.such.series"}, "series"),
        ({"condition": {"type": "sometimes", "op": ">", "value": 1}}, "condition"),
        ({"condition": {"type": "threshold", "value": 1}}, "condition.threshold.op"),
        ({"condition": {"type": "threshold", "op": "!=", "value": 1}}, "condition.threshold.op"),
        ({"condition": {"type": "threshold", "op": ">", "value": "high"}}, "condition.threshold.value"),
        (
            {"condition": {"type": "threshold", "op": ">", "value": 1, "window_seconds": 1}},
            "condition.threshold.window_seconds",
        ),
        ({"condition": {"type": "threshold", "fn": "p95", "op": ">", "value": 1}}, "condition.fn"),
        (
            {"condition": {"type": "ratio", "numerator": {"colour": "x"}, "op": ">", "value": 0.5}},
            "condition.numerator",
        ),
        ({"labels": {"colour": "red"}}, "labels"),
        ({"group_by": ["colour"]}, "group_by"),
        ({"group_by": ["model", "model"]}, "group_by"),
        ({"group_by": "model"}, "group_by"),
        ({"for_seconds": -1}, "for_seconds"),
        ({"severity": "apocalyptic"}, "severity"),
    ],
)
async def test_invalid_rules_name_the_field(
    h: Harness, alice: dict[str, str], change: dict[str, Any], field: str
) -> None:
    response = await h.client.post(RULES, json={**TOKENS_RULE, **change}, headers=alice)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert fields_of(response)[0].startswith(field)


async def test_system_series_rules_are_for_administrators(
    h: Harness, alice: dict[str, str], admin_headers: dict[str, str]
) -> None:
    rule = {
        "name": "errors",
        "series": "http.requests",
        "condition": {"type": "ratio", "numerator": {"status_class": "5xx"}, "op": ">", "value": 0.1},
    }
    denied = await h.client.post(RULES, json=rule, headers=alice)
    assert denied.status_code == 403
    assert ok_data(await h.client.post(RULES, json=rule, headers=admin_headers), 201)["series"] == "http.requests"


async def test_a_webhook_to_a_private_address_is_refused(h: Harness, alice: dict[str, str]) -> None:
    for url in (
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
        "ftp://example.com/x",
    ):
        response = await h.client.post(RULES, json={**TOKENS_RULE, "webhook_url": url}, headers=alice)
        assert response.status_code == 400, (url, response.text)
        assert fields_of(response) == ["webhook_url"]
    assert ok_data(await h.client.get(RULES, headers=alice)) == []  # nothing half-created


async def test_builtin_rules_are_switched_off_not_deleted(
    h: Harness, alice: dict[str, str], admin_headers: dict[str, str]
) -> None:
    rules = ok_data(await h.client.get(RULES, headers=admin_headers))
    builtin = {r["builtin"]: r for r in rules if r["builtin"]}
    assert set(builtin) == {"error_rate", "p95_latency", "breaker_open", "log_dropped", "disk_space"}
    assert all(r["owner_id"] is None and r["enabled"] for r in builtin.values())
    assert ok_data(await h.client.get(RULES, headers=alice)) == []  # not a developer's
    rule_id = builtin["p95_latency"]["id"]
    assert (await h.client.get(f"{RULES}/{rule_id}", headers=alice)).status_code == 404
    deleted = await h.client.delete(f"{RULES}/{rule_id}", headers=admin_headers)
    assert deleted.status_code == 409
    off = ok_data(await h.client.patch(f"{RULES}/{rule_id}", json={"enabled": False}, headers=admin_headers))
    assert off["enabled"] is False


async def test_operator_settings_switch_builtin_rules_off(make_harness: Any, admin_headers: dict[str, str]) -> None:
    async with make_harness(alerts={"disabled_rules": ["disk_space"]}) as h:
        rules = {r["builtin"]: r for r in ok_data(await h.client.get(RULES, headers=admin_headers)) if r["builtin"]}
        assert rules["disk_space"]["enabled"] is False
        assert rules["error_rate"]["enabled"] is True


async def test_silences(h: Harness, alice: dict[str, str]) -> None:
    rule_id = ok_data(await h.client.post(RULES, json=TOKENS_RULE, headers=alice), 201)["id"]
    bad = await h.client.post(SILENCES, json={"rule_id": rule_id}, headers=alice)
    assert bad.status_code == 400
    past = await h.client.post(SILENCES, json={"rule_id": rule_id, "ends_at": "2001-01-01T00:00:00Z"}, headers=alice)
    assert fields_of(past) == ["ends_at"]
    silence = ok_data(
        await h.client.post(
            SILENCES, json={"rule_id": rule_id, "duration_seconds": 3600, "comment": "deploy"}, headers=alice
        ),
        201,
    )
    assert silence["active"] is True
    rule = ok_data(await h.client.get(f"{RULES}/{rule_id}", headers=alice))
    assert rule["silenced_until"] is not None
    assert [s["id"] for s in ok_data(await h.client.get(SILENCES, headers=alice))] == [silence["id"]]
    ended = ok_data(await h.client.delete(f"{SILENCES}/{silence['id']}", headers=alice))
    assert ended["active"] is False
    assert ok_data(await h.client.get(SILENCES, headers=alice)) == []
