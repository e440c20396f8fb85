"""One state per label set: the built-in breaker rule fires per endpoint (two breakers, two events,
two signed deliveries to a real HTTP receiver; one resolves while the other keeps firing), ``for``
timers run per label set, silences by matcher, a label set that leaves the data, absence per label
set (both databases, injected clock)."""

from __future__ import annotations

import json
from typing import Any

from tests.alerts.support import EVENTS, RULES, SILENCES, fields_of, ok_data, receiver, sample
from tests.conftest import ADMIN_KEY, Harness

ADMIN = Harness.auth(ADMIN_KEY)
A = "openai:http://a.test"
B = "openai:http://b.test"
BREAKER = "alr_builtin_breaker_open"


def breaker(h: Harness, endpoint: str, value: float) -> None:
    h.runtime.gateway.metrics.breaker_state.labels(endpoint).set(value)


async def step(h: Harness, seconds: float) -> list[Any]:
    """Let time pass, sample, evaluate: the events of this round."""
    h.clock.advance(seconds)
    await sample(h)
    return await h.runtime.monitoring.evaluator.evaluate_once() or []


def changes(events: list[Any], rule_id: str) -> list[tuple[str, str, dict[str, str]]]:
    return sorted((e.from_state, e.to_state, e.labels) for e in events if e.rule_id == rule_id)


async def test_the_breaker_rule_fires_per_endpoint(make_harness: Any, database_url: str) -> None:
    async with (
        receiver() as hook,
        make_harness(
            database_url=database_url,
            workflow={"outbound_allow": ["127.0.0.1/32"]},
            alerts={"webhook_url": hook.url, "webhook_secret": "s3cret"},
        ) as h,
    ):
        evaluator = h.runtime.monitoring.evaluator
        breaker(h, A, 1)
        breaker(h, B, 0)
        events = await step(h, 0)
        assert changes(events, BREAKER) == [("inactive", "firing", {"endpoint": A})]
        rule = ok_data(await h.client.get(f"{RULES}/{BREAKER}", headers=ADMIN))
        assert (rule["state"], rule["group_by"]) == ("firing", ["endpoint"])
        assert [(i["labels"], i["state"]) for i in rule["instances"]] == [({"endpoint": A}, "firing")]
        await evaluator.notifier.wait_idle()
        assert len(hook.deliveries) == 1

        breaker(h, B, 1)  # the second endpoint opens too: its own event, its own delivery
        events = await step(h, 10)
        assert changes(events, BREAKER) == [("inactive", "firing", {"endpoint": B})]
        await evaluator.notifier.wait_idle()
        bodies = [json.loads(d.body) for d in hook.deliveries]
        assert [(b["event"]["to_state"], b["event"]["labels"]) for b in bodies] == [
            ("firing", {"endpoint": A}),
            ("firing", {"endpoint": B}),
        ]
        assert {b["rule"]["group_by"] == ["endpoint"] for b in bodies} == {True}
        now = ok_data(await h.client.get("/api/v1/alerts", headers=ADMIN))
        assert sorted((a["labels"]["endpoint"], a["state"]) for a in now if a["rule_id"] == BREAKER) == [
            (A, "firing"),
            (B, "firing"),
        ]

        breaker(h, A, 0)  # A closes: it resolves, B keeps firing
        await step(h, 10)
        events = await step(h, 60)
        assert changes(events, BREAKER) == [("firing", "resolved", {"endpoint": A})]
        await evaluator.notifier.wait_idle()
        assert [json.loads(d.body)["event"]["labels"] for d in hook.deliveries][2:] == [{"endpoint": A}]
        rule = ok_data(await h.client.get(f"{RULES}/{BREAKER}", headers=ADMIN))
        assert rule["state"] == "firing"
        assert [(i["labels"]["endpoint"], i["state"]) for i in rule["instances"]] == [(B, "firing"), (A, "resolved")]
        now = ok_data(await h.client.get("/api/v1/alerts", headers=ADMIN))
        assert [a["labels"] for a in now if a["rule_id"] == BREAKER] == [{"endpoint": B}]

        history = ok_data(await h.client.get(EVENTS, params={"rule_id": BREAKER}, headers=ADMIN))["items"]
        assert [(e["to_state"], e["labels"], e["notification"]["status"]) for e in history] == [
            ("resolved", {"endpoint": A}, "sent"),
            ("firing", {"endpoint": B}, "sent"),
            ("firing", {"endpoint": A}, "sent"),
        ]

        # A resolved instance is shown for [alerts] resolved_keep_seconds (900), then forgotten.
        events = await step(h, 900)
        assert changes(events, BREAKER) == []
        rule = ok_data(await h.client.get(f"{RULES}/{BREAKER}", headers=ADMIN))
        assert [i["labels"]["endpoint"] for i in rule["instances"]] == [B]


async def test_for_timers_run_per_label_set(make_harness: Any, database_url: str) -> None:
    async with make_harness(database_url=database_url) as h:
        rule = {
            "name": "breaker open a while",
            "series": "breaker.open",
            "condition": {"type": "threshold", "fn": "max", "op": ">", "value": 0, "window_seconds": 60},
            "for_seconds": 30,
        }
        created = ok_data(await h.client.post(RULES, json=rule, headers=ADMIN), 201)
        assert created["group_by"] == ["endpoint"]  # the default: every label the filters leave open
        rule_id = created["id"]
        breaker(h, A, 1)
        breaker(h, B, 0)
        assert changes(await step(h, 0), rule_id) == [("inactive", "pending", {"endpoint": A})]
        breaker(h, B, 1)
        assert changes(await step(h, 20), rule_id) == [("inactive", "pending", {"endpoint": B})]
        assert changes(await step(h, 10), rule_id) == [("pending", "firing", {"endpoint": A})]  # A: 30 s held
        assert changes(await step(h, 10), rule_id) == []  # B: 20 s so far
        assert changes(await step(h, 10), rule_id) == [("pending", "firing", {"endpoint": B})]  # B: 30 s
        states = ok_data(await h.client.get(f"{RULES}/{rule_id}", headers=ADMIN))["instances"]
        assert sorted((i["labels"]["endpoint"], i["state"]) for i in states) == [(A, "firing"), (B, "firing")]
        # A closes: once its open samples have left the window it resolves, while B keeps firing.
        breaker(h, A, 0)
        events = await step(h, 70)
        assert changes(events, rule_id) == [("firing", "resolved", {"endpoint": A})]
        breaker(h, B, 0)  # B closes as A opens again: B resolves, A is pending again, its timer anew
        breaker(h, A, 1)
        events = await step(h, 10)
        assert changes(events, rule_id) == [
            ("firing", "resolved", {"endpoint": B}),
            ("resolved", "pending", {"endpoint": A}),
        ]


async def test_a_silence_by_matcher_holds_back_one_label_set(make_harness: Any, database_url: str) -> None:
    async with (
        receiver() as hook,
        make_harness(database_url=database_url, workflow={"outbound_allow": ["127.0.0.1/32"]}) as h,
    ):
        rule = {
            "name": "breaker open",
            "series": "breaker.open",
            "condition": {"type": "threshold", "fn": "max", "op": ">", "value": 0, "window_seconds": 60},
            "webhook_url": hook.url,
        }
        rule_id = ok_data(await h.client.post(RULES, json=rule, headers=ADMIN), 201)["id"]
        bad = await h.client.post(
            SILENCES, json={"rule_id": rule_id, "matchers": {"model": "x"}, "duration_seconds": 60}, headers=ADMIN
        )
        assert bad.status_code == 400
        assert fields_of(bad) == ["matchers"]
        silence = {"rule_id": rule_id, "matchers": {"endpoint": A}, "duration_seconds": 600, "comment": "known"}
        created = ok_data(await h.client.post(SILENCES, json=silence, headers=ADMIN), 201)
        assert created["matchers"] == {"endpoint": A}

        breaker(h, A, 1)
        breaker(h, B, 1)
        events = await step(h, 0)
        assert sorted((e.labels["endpoint"], e.notification.status) for e in events if e.rule_id == rule_id) == [
            (A, "silenced"),
            (B, "pending"),
        ]
        await h.runtime.monitoring.evaluator.notifier.wait_idle()
        assert [json.loads(d.body)["event"]["labels"] for d in hook.deliveries] == [{"endpoint": B}]
        out = ok_data(await h.client.get(f"{RULES}/{rule_id}", headers=ADMIN))
        assert out["silenced_until"] is None  # the rule as a whole is not silenced
        silenced = {i["labels"]["endpoint"]: i["silenced_until"] is not None for i in out["instances"]}
        assert silenced == {A: True, B: False}


async def test_bad_grouping_names_the_field(make_harness: Any, database_url: str) -> None:
    async with make_harness(database_url=database_url) as h:
        base = {
            "name": "errors",
            "series": "http.requests",
            "condition": {"type": "ratio", "numerator": {"status_class": "5xx"}, "op": ">", "value": 0.1},
        }
        for group_by in (["colour"], ["route_class", "route_class"], ["status_class"], ["x" * 65]):
            answer = await h.client.post(RULES, json={**base, "group_by": group_by}, headers=ADMIN)
            assert answer.status_code == 400, (group_by, answer.text)
            assert fields_of(answer)[0].startswith("group_by"), group_by
        unknown = await h.client.post(RULES, json={**base, "group_by": ["colour"]}, headers=ADMIN)
        assert "colour" in unknown.json()["error"]["details"]["fields"][0]["message"]
        created = ok_data(await h.client.post(RULES, json=base, headers=ADMIN), 201)
        assert created["group_by"] == []  # a ratio judges the whole unless told
        by_route = ok_data(await h.client.post(RULES, json={**base, "group_by": ["route_class"]}, headers=ADMIN), 201)
        assert by_route["group_by"] == ["route_class"]
        patched = await h.client.patch(f"{RULES}/{by_route['id']}", json={"group_by": ["nope"]}, headers=ADMIN)
        assert patched.status_code == 400
        assert fields_of(patched) == ["group_by"]


async def test_a_label_set_that_leaves_the_data_resolves_and_absence_fires_per_label_set(
    make_harness: Any, database_url: str
) -> None:
    async with make_harness(database_url=database_url) as h:
        quiet = {
            "name": "breaker silent",
            "series": "breaker.open",
            "group_by": ["endpoint"],
            "condition": {"type": "absence", "window_seconds": 400},
        }
        absence_id = ok_data(await h.client.post(RULES, json=quiet, headers=ADMIN), 201)["id"]
        open_rule = {
            "name": "breaker open",
            "series": "breaker.open",
            "condition": {"type": "threshold", "fn": "max", "op": ">", "value": 0, "window_seconds": 60},
        }
        open_id = ok_data(await h.client.post(RULES, json=open_rule, headers=ADMIN), 201)["id"]
        breaker(h, A, 1)
        breaker(h, B, 1)
        events = await step(h, 0)
        assert changes(events, absence_id) == []
        assert [e.labels["endpoint"] for e in events if e.rule_id == open_id] in ([A, B], [B, A])
        # A's breaker goes away (no more samples): it leaves the data; B stays, sampled.
        h.runtime.gateway.metrics.breaker_state.remove(A)
        events = []
        for _ in range(5):
            events += await step(h, 100)
        resolved = [(e.to_state, e.labels, e.message) for e in events if e.rule_id == open_id]
        assert resolved == [("resolved", {"endpoint": A}, "no longer in the data")]
        assert changes(events, absence_id) == [("inactive", "firing", {"endpoint": A})]
