"""Migration 0016 (alert instances) goes down and up on a store with alert rules, events and
silences: a rule that was firing becomes one instance labelled by its filters with the same state
and since, old events get their rule's labels, the breaker rule groups by endpoint, and going down
keeps every rule, event and silence (the rules' columns hold the summary)."""

from __future__ import annotations

import json
from typing import Any

from tests.alerts.support import RULES, SILENCES, ok_data
from tests.conftest import Harness
from tests.storage.migrations import execute, migrate_to, rows

RULE = {
    "name": "busy logs",
    "series": "http.requests",
    "labels": {"route_class": "db"},
    "condition": {"type": "threshold", "op": ">", "value": 2, "window_seconds": 60},
}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def test_down_and_up_keeps_rules_events_and_silences(h: Harness, admin_headers: dict[str, str]) -> None:
    rule_id = ok_data(await h.client.post(RULES, json=RULE, headers=admin_headers), 201)["id"]
    ok_data(await h.client.get(RULES, headers=admin_headers))  # the built-in rules exist
    ok_data(
        await h.client.post(SILENCES, json={"rule_id": rule_id, "duration_seconds": 600}, headers=admin_headers), 201
    )

    await migrate_to(h, "0015", down=True)
    # Before 0016: one state per rule. This one fires, with an event saying so.
    await execute(
        h,
        "UPDATE alert_rules SET state = 'firing', value = 3.0, state_since = created_at WHERE id = :id",
        id=rule_id,
    )
    await execute(
        h,
        "INSERT INTO alert_events (id, rule_id, owner_id, rule_name, severity, from_state, to_state, at, value, "
        "message, notify_status, notify_attempts) SELECT 'ale_old', id, owner_id, name, severity, 'inactive', "
        "'firing', created_at, 3.0, 'busy', 'none', 0 FROM alert_rules WHERE id = :id",
        id=rule_id,
    )
    [(since,)] = await rows(h, "SELECT state_since FROM alert_rules WHERE id = :id", id=rule_id)

    await migrate_to(h, "head", down=False)
    instances = await rows(h, "SELECT rule_id, labels_key, state, state_since, value FROM alert_instances")
    assert instances == [(rule_id, '{"route_class":"db"}', "firing", since, 3.0)]
    [(labels,)] = await rows(h, "SELECT labels FROM alert_events WHERE id = 'ale_old'")
    assert _json(labels) == {"route_class": "db"}
    groups = {
        name: _json(value) for name, value in await rows(h, "SELECT COALESCE(builtin, id), group_by FROM alert_rules")
    }
    assert groups["breaker_open"] == ["endpoint"]
    assert groups[rule_id] == []  # rules written before keep their meaning: one instance each
    assert groups["error_rate"] == []
    [(matchers,)] = await rows(h, "SELECT matchers FROM alert_silences")
    assert _json(matchers) == {}

    # Through the API: the rule, its one instance and the old event, with labels.
    out = ok_data(await h.client.get(f"{RULES}/{rule_id}", headers=admin_headers))
    assert (out["state"], out["group_by"]) == ("firing", [])
    assert [(i["labels"], i["state"], i["value"]) for i in out["instances"]] == [({"route_class": "db"}, "firing", 3.0)]
    now = ok_data(await h.client.get("/api/v1/alerts", headers=admin_headers))
    assert [(a["rule_id"], a["labels"]) for a in now] == [(rule_id, {"route_class": "db"})]
    events = ok_data(await h.client.get("/api/v1/alerts/events", params={"rule_id": rule_id}, headers=admin_headers))
    assert [(e["id"], e["labels"]) for e in events["items"]] == [("ale_old", {"route_class": "db"})]

    await migrate_to(h, "0015", down=True)  # nothing is lost going down: the rule keeps its summary
    assert await rows(h, "SELECT state, value FROM alert_rules WHERE id = :id", id=rule_id) == [("firing", 3.0)]
    assert await rows(h, "SELECT id FROM alert_events WHERE rule_id = :id", id=rule_id) == [("ale_old",)]
    assert len(await rows(h, "SELECT id FROM alert_silences")) == 1
    await migrate_to(h, "head", down=False)
    assert len(await rows(h, "SELECT id FROM alert_instances")) == 1
    ok_data(await h.client.delete(f"{RULES}/{rule_id}", headers=admin_headers))  # the cascade still works
    assert await rows(h, "SELECT id FROM alert_instances") == []
    assert await rows(h, "SELECT id FROM alert_events WHERE rule_id = :id", id=rule_id) == []
