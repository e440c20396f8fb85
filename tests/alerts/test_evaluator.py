"""Alerts from real traffic: pending → firing → resolved with an injected clock, signed webhooks to
a real HTTP server, a down endpoint (retries, then failed while the alert still fires), silences,
live events on the dashboard feed (both databases)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from typing import Any

from tests.alerts.support import EVENTS, RULES, ok_data, receiver, sample, traffic
from tests.conftest import ADMIN_KEY, Harness

ADMIN = Harness.auth(ADMIN_KEY)


def busy_rule(webhook: str | None = None, for_seconds: int = 20) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": "busy logs",
        "series": "http.requests",
        "labels": {"route_class": "db"},
        "condition": {"type": "threshold", "op": ">", "value": 2, "window_seconds": 60},
        "for_seconds": for_seconds,
        "severity": "critical",
    }
    if webhook:
        rule["webhook_url"] = webhook
    return rule


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}/hook"


async def test_an_alert_fires_notifies_and_resolves(make_harness: Any, database_url: str) -> None:
    async with (
        receiver() as hook,
        make_harness(database_url=database_url, workflow={"outbound_allow": ["127.0.0.1/32"]}) as h,
    ):
        created = ok_data(await h.client.post(RULES, json=busy_rule(hook.url), headers=ADMIN), 201)
        secret = created["webhook_secret"]
        evaluator = h.runtime.monitoring.evaluator
        live = h.runtime.bus.subscribe()
        await live.add("dashboard")

        await sample(h)
        h.clock.advance(10)
        await traffic(h, ADMIN, 3)
        await sample(h)
        events = await evaluator.evaluate_once()
        assert events is not None
        assert [(e.from_state, e.to_state) for e in events if e.rule_id == created["id"]] == [("inactive", "pending")]

        h.clock.advance(20)
        await sample(h)
        events = await evaluator.evaluate_once()
        assert [(e.from_state, e.to_state) for e in events or [] if e.rule_id == created["id"]] == [
            ("pending", "firing")
        ]
        await evaluator.notifier.wait_idle()
        assert len(hook.deliveries) == 1
        delivery = hook.deliveries[0]
        timestamp = delivery.headers["x-trellis-timestamp"]
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + delivery.body, hashlib.sha256).hexdigest()
        assert delivery.headers["x-trellis-signature"] == f"sha256={expected}"
        body = json.loads(delivery.body)
        assert (body["type"], body["event"]["to_state"], body["rule"]["id"]) == ("alert", "firing", created["id"])
        assert body["event"]["value"] > 2

        rule = ok_data(await h.client.get(f"{RULES}/{created['id']}", headers=ADMIN))
        assert rule["state"] == "firing"
        now = ok_data(await h.client.get("/api/v1/alerts", headers=ADMIN))
        assert [(a["rule_id"], a["state"], a["labels"]) for a in now] == [
            (created["id"], "firing", {"route_class": "db", "status_class": "2xx", "status": "200"})
        ]

        h.clock.advance(70)  # the traffic leaves the window
        await sample(h)
        events = await evaluator.evaluate_once()
        assert [(e.from_state, e.to_state) for e in events or [] if e.rule_id == created["id"]] == [
            ("firing", "resolved")
        ]
        await evaluator.notifier.wait_idle()
        assert len(hook.deliveries) == 2

        history = ok_data(await h.client.get(EVENTS, params={"rule_id": created["id"]}, headers=ADMIN))
        assert [(e["from_state"], e["to_state"]) for e in history["items"]] == [
            ("firing", "resolved"),
            ("pending", "firing"),
            ("inactive", "pending"),
        ]
        statuses = [e["notification"]["status"] for e in history["items"]]
        assert statuses == ["sent", "sent", "none"]

        seen = []
        while (item := live.get_nowait()) is not None:
            message = item.message()  # type: ignore[union-attr]
            if message["event"] == "alert_state" and message["data"]["rule_id"] == created["id"]:
                seen.append(message["data"]["to_state"])
        assert seen == ["pending", "firing", "resolved"]
        await live.aclose()


async def test_a_down_webhook_is_retried_then_marked_failed_while_the_alert_fires(make_harness: Any) -> None:
    url = closed_port_url()
    async with make_harness(
        workflow={"outbound_allow": ["127.0.0.1/32"]}, alerts={"webhook_attempts": 3, "webhook_backoff_seconds": 0}
    ) as h:
        created = ok_data(await h.client.post(RULES, json=busy_rule(url, for_seconds=0), headers=ADMIN), 201)
        evaluator = h.runtime.monitoring.evaluator
        await sample(h)
        h.clock.advance(10)
        await traffic(h, ADMIN, 3)
        await sample(h)
        await evaluator.evaluate_once()
        await evaluator.notifier.wait_idle()
        history = ok_data(await h.client.get(EVENTS, params={"rule_id": created["id"]}, headers=ADMIN))
        (event,) = history["items"]
        assert event["to_state"] == "firing"
        assert event["notification"]["status"] == "failed"
        assert event["notification"]["attempts"] == 3
        assert "Connect" in event["notification"]["last_error"]
        assert ok_data(await h.client.get(f"{RULES}/{created['id']}", headers=ADMIN))["state"] == "firing"


async def test_a_silenced_rule_changes_state_without_notifying(make_harness: Any) -> None:
    async with receiver() as hook, make_harness(workflow={"outbound_allow": ["127.0.0.1/32"]}) as h:
        created = ok_data(await h.client.post(RULES, json=busy_rule(hook.url, for_seconds=0), headers=ADMIN), 201)
        silence = {"rule_id": created["id"], "duration_seconds": 600}
        ok_data(await h.client.post("/api/v1/alerts/silences", json=silence, headers=ADMIN), 201)
        evaluator = h.runtime.monitoring.evaluator
        await sample(h)
        h.clock.advance(10)
        await traffic(h, ADMIN, 3)
        await sample(h)
        await evaluator.evaluate_once()
        await evaluator.notifier.wait_idle()
        (event,) = ok_data(await h.client.get(EVENTS, params={"rule_id": created["id"]}, headers=ADMIN))["items"]
        assert (event["to_state"], event["notification"]["status"]) == ("firing", "silenced")
        assert hook.deliveries == []


async def test_builtin_breaker_rule_fires_when_a_breaker_opens(make_harness: Any) -> None:
    async with make_harness() as h:
        evaluator = h.runtime.monitoring.evaluator
        h.runtime.gateway.metrics.breaker_state.labels("openai:http://model.test").set(1)
        await sample(h)
        events = await evaluator.evaluate_once() or []
        fired = [e for e in events if e.rule_id == "alr_builtin_breaker_open"]
        assert [(e.to_state, e.severity) for e in fired] == [("firing", "critical")]
        h.runtime.gateway.metrics.breaker_state.labels("openai:http://model.test").set(0)
        h.clock.advance(10)
        await sample(h)
        h.clock.advance(60)
        await sample(h)
        events = await evaluator.evaluate_once() or []
        assert [e.to_state for e in events if e.rule_id == "alr_builtin_breaker_open"] == ["resolved"]


async def test_absence_of_data(make_harness: Any) -> None:
    async with make_harness() as h:
        rule = {
            "name": "no traffic",
            "series": "http.requests",
            "labels": {"route_class": "ai"},
            "condition": {"type": "absence", "window_seconds": 60},
        }
        created = ok_data(await h.client.post(RULES, json=rule, headers=ADMIN), 201)
        await sample(h)
        events = await h.runtime.monitoring.evaluator.evaluate_once() or []
        assert [e.to_state for e in events if e.rule_id == created["id"]] == ["firing"]
