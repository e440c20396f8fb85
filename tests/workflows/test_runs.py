"""Runs through the REST door: execute, status, history, events, cancel, retry, and the workflow
language at work (needs, conditions, retries, timeouts, on_error, map, waits, sub-workflows)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from tests.conftest import Harness
from tests.workflows.support import (
    ADMIN,
    Upstream,
    events,
    execute,
    local_outbound,
    running_upstream,
    save,
    status,
    steps_by_key,
    until_status,
)

HELLO = {
    "input_schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    "steps": [
        {"id": "greet", "type": "transform", "with": {"value": "Hello, {{ input.name }}!"}},
        {"id": "shout", "type": "transform", "with": {"value": "{{ steps.greet.output | upper }}"}},
        {
            "id": "both",
            "type": "transform",
            "with": {"value": {"greeting": "{{ steps.greet.output }}", "loud": "{{ steps.shout.output }}"}},
        },
    ],
}


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Harness]:
    async with make_harness(database_url=database_url, **local_outbound()) as harness:
        yield harness


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as server:
        yield server


async def test_a_run_goes_from_queued_to_succeeded_with_its_event_log(h: Harness) -> None:
    await save(h, "hello", HELLO)
    run = await execute(h, "hello", {"name": "Ada"})
    assert run["status"] == "succeeded"
    assert run["result"] == {"greeting": "Hello, Ada!", "loud": "HELLO, ADA!"}
    assert run["progress"] == 1.0
    detail = await status(h, run["id"])
    assert [s["key"] for s in detail["steps"]] == ["greet", "shout", "both"]
    assert all(s["status"] == "succeeded" and s["attempt"] == 1 for s in detail["steps"])
    kinds = [e["type"] for e in await events(h, run["id"])]
    assert kinds == [
        "run.queued",
        "run.started",
        "step.started",
        "step.succeeded",
        "step.started",
        "step.succeeded",
        "step.started",
        "step.succeeded",
        "run.succeeded",
    ]
    seqs = [e["seq"] for e in await events(h, run["id"])]
    assert seqs == list(range(1, len(seqs) + 1))


def event_inserts(h: Harness) -> list[int]:
    """How many event rows each INSERT into workflow_events wrote, in order: every transaction the
    engine commits inserts its events with one statement."""
    inserted: list[int] = []

    @sa_event.listens_for(h.runtime.database.engine.sync_engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO WORKFLOW_EVENTS"):
            inserted.append(len(parameters) if executemany else 1)

    return inserted


async def test_a_chain_of_inline_steps_is_recorded_in_one_commit_and_a_slow_step_breaks_it(
    h: Harness, upstream: Upstream
) -> None:
    """transform steps are inline: a chain of them joins one transaction; a step that is not
    inline (http.request) gets its start committed before it runs."""
    await save(h, "hello", HELLO)
    inserts = event_inserts(h)
    run = await execute(h, "hello", {"name": "Ada"})
    assert run["status"] == "succeeded"
    # Created (run.queued, run.started), then the three steps and the run's end in one commit.
    assert inserts == [2, 7]

    mixed = {
        "steps": [
            {"id": "a", "type": "transform", "with": {"value": "{{ input.n }}"}},
            {"id": "call", "type": "http.request", "with": {"url": upstream.url("/ok"), "method": "GET"}},
            {"id": "c", "type": "transform", "with": {"value": "{{ steps.a.output }}-{{ steps.call.output.status }}"}},
        ]
    }
    await save(h, "mixed", mixed)
    inserts.clear()
    run = await execute(h, "mixed", {"n": 7})
    assert run["status"] == "succeeded", run
    assert run["result"] == "7-200"
    # a runs and call starts (3 events); call ends, c runs, the run ends (4 events).
    assert inserts == [2, 3, 4]
    kinds = [(e["type"], e["step"]) for e in await events(h, run["id"])]
    assert kinds[2:] == [
        ("step.started", "a"),
        ("step.succeeded", "a"),
        ("step.started", "call"),
        ("step.succeeded", "call"),
        ("step.started", "c"),
        ("step.succeeded", "c"),
        ("run.succeeded", None),
    ]


async def test_the_seeds_request_shape_is_accepted(h: Harness) -> None:
    await save(h, "hello", HELLO)
    body = {"workflow_id": "hello", "input_data": {"name": "Seed"}, "wait": 10}
    response = await h.client.post("/api/v1/workflow/execute", json=body, headers=ADMIN)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["execution_id"] == data["id"]
    assert data["result"]["greeting"] == "Hello, Seed!"


async def test_without_wait_the_answer_is_202_at_once(h: Harness) -> None:
    await save(h, "hello", HELLO)
    response = await h.client.post(
        "/api/v1/workflow/execute", json={"workflow": "hello", "input": {"name": "A"}}, headers=ADMIN
    )
    assert response.status_code == 202
    assert response.json()["data"]["status"] in ("queued", "running", "succeeded")
    done = await until_status(h, response.json()["data"]["id"], {"succeeded"})
    assert done["result"]["greeting"] == "Hello, A!"


async def test_bad_input_is_refused_and_nothing_runs(h: Harness) -> None:
    await save(h, "hello", HELLO)
    c = h.client
    wrong = await c.post("/api/v1/workflow/execute", json={"workflow": "hello", "input": {"name": 5}}, headers=ADMIN)
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"]["fields"][0]["field"] == "input.name"
    missing = await c.post("/api/v1/workflow/execute", json={"workflow": "hello", "input": {}}, headers=ADMIN)
    assert missing.status_code == 400
    unknown = await c.post("/api/v1/workflow/execute", json={"workflow": "nope"}, headers=ADMIN)
    assert unknown.status_code == 404
    version = await c.post("/api/v1/workflow/execute", json={"workflow": "hello", "version": 7}, headers=ADMIN)
    assert version.status_code == 404
    strict = await c.post("/api/v1/workflow/execute", json={"workflow": "hello", "wait": "5"}, headers=ADMIN)
    assert strict.status_code == 400
    history = await c.get("/api/v1/workflow/history", headers=ADMIN)
    assert history.json()["data"]["items"] == []


async def test_oversized_input_is_a_413(make_harness: Callable[..., Any]) -> None:
    async with make_harness(workflow={"max_input_bytes": 1000}) as h:
        await save(h, "hello", HELLO)
        body = {"workflow": "hello", "input": {"name": "x" * 2000}}
        response = await h.client.post("/api/v1/workflow/execute", json=body, headers=ADMIN)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large_error"


async def test_the_same_idempotency_key_gives_the_same_run(h: Harness) -> None:
    await save(h, "hello", HELLO)
    first = await execute(h, "hello", {"name": "A"}, idempotency_key="order-1")
    second = await execute(h, "hello", {"name": "B"}, idempotency_key="order-1")
    assert second["id"] == first["id"]
    assert second["created"] is False
    assert second["result"]["greeting"] == "Hello, A!"
    # Another user's key lives in another namespace.
    _, key = await h.user_with_key("carol")
    await save(h, "hello", HELLO, headers={"Authorization": f"Bearer {key}"})
    theirs = await execute(
        h, "hello", {"name": "C"}, idempotency_key="order-1", headers={"Authorization": f"Bearer {key}"}
    )
    assert theirs["id"] != first["id"]


async def test_another_users_run_is_not_found_everywhere(h: Harness) -> None:
    await save(h, "hello", HELLO)
    run = await execute(h, "hello", {"name": "A"})
    _, key = await h.user_with_key("mallory")
    other = {"Authorization": f"Bearer {key}"}
    c = h.client
    for response in (
        await c.get(f"/api/v1/workflow/status/{run['id']}", headers=other),
        await c.get(f"/api/v1/workflow/{run['id']}/events", headers=other),
        await c.post(f"/api/v1/workflow/{run['id']}/cancel", headers=other),
        await c.post(f"/api/v1/workflow/{run['id']}/retry", headers=other),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found_error"
    assert (await c.get("/api/v1/workflow/history", headers=other)).json()["data"]["items"] == []
    unknown = await c.get("/api/v1/workflow/status/run_unknown", headers=ADMIN)
    assert unknown.status_code == 404


async def test_cancel_and_retry_of_an_ended_run_are_409(h: Harness) -> None:
    await save(h, "hello", HELLO)
    run = await execute(h, "hello", {"name": "A"})
    cancel = await h.client.post(f"/api/v1/workflow/{run['id']}/cancel", headers=ADMIN)
    assert cancel.status_code == 409
    assert cancel.json()["error"]["details"]["status"] == "succeeded"
    retry = await h.client.post(f"/api/v1/workflow/{run['id']}/retry", headers=ADMIN)
    assert retry.status_code == 409


async def test_history_filters_and_pages_with_a_cursor(h: Harness) -> None:
    await save(h, "hello", HELLO)
    await save(h, "other", {"steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
    ids = [(await execute(h, "hello", {"name": str(n)}))["id"] for n in range(5)]
    h.clock.advance(1)
    await execute(h, "other")
    c = h.client
    page = await c.get("/api/v1/workflow/history", params={"workflow": "hello", "limit": 2}, headers=ADMIN)
    seen = [item["id"] for item in page.json()["data"]["items"]]
    cursor = page.json()["data"]["next_cursor"]
    while cursor:
        page = await c.get(
            "/api/v1/workflow/history", params={"workflow": "hello", "limit": 2, "cursor": cursor}, headers=ADMIN
        )
        seen += [item["id"] for item in page.json()["data"]["items"]]
        cursor = page.json()["data"]["next_cursor"]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    failed = await c.get("/api/v1/workflow/history", params={"status": "failed"}, headers=ADMIN)
    assert failed.json()["data"]["items"] == []
    bad = await c.get("/api/v1/workflow/history", params={"status": "nope"}, headers=ADMIN)
    assert bad.status_code == 400
    garbage = await c.get("/api/v1/workflow/history", params={"cursor": "garbage"}, headers=ADMIN)
    assert garbage.status_code == 400


async def test_parallel_branches_conditions_and_the_output_template(h: Harness) -> None:
    definition = {
        "steps": [
            {"id": "left", "type": "transform", "needs": [], "with": {"value": "L"}},
            {"id": "right", "type": "transform", "needs": [], "with": {"value": "R"}},
            {"id": "never", "type": "transform", "needs": ["left"], "if": "{{ input.flag }}", "with": {"value": "N"}},
            {
                "id": "join",
                "type": "transform",
                "needs": ["left", "right", "never"],
                "with": {"value": "{{ steps.left.output }}{{ steps.right.output }}-{{ steps.never.status }}"},
            },
        ],
        "output": {"joined": "{{ steps.join.output }}", "never": "{{ steps.never.output }}"},
    }
    await save(h, "branches", definition)
    run = await execute(h, "branches", {"flag": False})
    assert run["result"] == {"joined": "LR-skipped", "never": None}
    assert steps_by_key(await status(h, run["id"]))["never"]["status"] == "skipped"


async def test_retries_follow_the_policy_and_count_attempts(h: Harness, upstream: Upstream) -> None:
    definition = {
        "steps": [
            {
                "id": "call",
                "type": "http.request",
                "retry": {"attempts": 3, "backoff_seconds": 0},
                "with": {"url": upstream.url("/flaky/2")},
            }
        ]
    }
    await save(h, "flaky", definition)
    run = await execute(h, "flaky")
    assert run["status"] == "succeeded"
    assert run["result"]["body"] == {"ok": True, "after": 3}
    assert upstream.calls["/flaky/2"] == 3
    step = steps_by_key(await status(h, run["id"]))["call"]
    assert step["attempt"] == 3
    kinds = [e["type"] for e in await events(h, run["id"])]
    assert kinds.count("step.retrying") == 2
    # Each attempt carried its own idempotency key: run, step and attempt.
    keys = [headers["Idempotency-Key"] for headers in upstream.headers]
    assert keys == [f"{run['id']}:call:{n}" for n in (1, 2, 3)]


async def test_a_client_error_is_not_retried(h: Harness, upstream: Upstream) -> None:
    definition = {
        "steps": [
            {
                "id": "call",
                "type": "http.request",
                "retry": {"attempts": 5, "backoff_seconds": 0},
                "with": {"url": upstream.url("/bad")},
            }
        ]
    }
    await save(h, "bad", definition)
    run = await execute(h, "bad")
    assert run["status"] == "failed"
    assert upstream.calls["/bad"] == 1
    assert run["error"]["step"] == "call"
    assert "answered 400" in run["error"]["message"]


async def test_on_error_continue_and_fallback(h: Harness, upstream: Upstream) -> None:
    definition = {
        "steps": [
            {"id": "optional", "type": "http.request", "on_error": "continue", "with": {"url": upstream.url("/fail")}},
            {
                "id": "risky",
                "type": "http.request",
                "on_error": "fallback",
                "fallback": "plan_b",
                "with": {"url": upstream.url("/fail")},
            },
            {"id": "plan_b", "type": "transform", "with": {"value": "recovered from: {{ error.message }}"}},
            {
                "id": "after",
                "type": "transform",
                "with": {"value": "{{ steps.optional.status }} / {{ steps.risky.output }}"},
            },
        ]
    }
    await save(h, "resilient", definition)
    run = await execute(h, "resilient")
    assert run["status"] == "succeeded", run["error"]
    assert run["result"].startswith("failed / recovered from: ")
    assert "answered 500" in run["result"]
    steps = steps_by_key(await status(h, run["id"]))
    assert steps["optional"]["status"] == "failed"
    assert steps["risky"]["status"] == "succeeded"
    assert steps["plan_b"]["status"] == "succeeded"


async def test_a_step_past_its_timeout_fails(h: Harness, upstream: Upstream) -> None:
    definition = {
        "steps": [
            {"id": "hang", "type": "http.request", "timeout_seconds": 0.2, "with": {"url": upstream.url("/slow")}}
        ]
    }
    await save(h, "hang", definition)
    run = await execute(h, "hang")
    assert run["status"] == "failed"
    assert "timed out after 0.2 s" in run["error"]["message"]
    await asyncio.wait_for(upstream.slow_cancelled.wait(), 5)  # the request was abandoned, not left hanging


async def test_map_fans_out_within_its_concurrency(h: Harness, upstream: Upstream) -> None:
    definition = {
        "steps": [
            {
                "id": "each",
                "type": "map",
                "over": "{{ input.items }}",
                "concurrency": 3,
                "step": {"type": "http.request", "with": {"url": upstream.url("/concurrent") + "?item={{ item }}"}},
            },
            {
                "id": "collect",
                "type": "transform",
                "with": {"value": "{{ steps.each.output | map(attribute='body') | map(attribute='item') | list }}"},
            },
        ]
    }
    await save(h, "fan", definition)
    items = [f"i{n}" for n in range(10)]
    run = await execute(h, "fan", {"items": items})
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == items  # in input order, whatever order they finished in
    assert upstream.calls["/concurrent"] == 10
    assert 1 < upstream.most_in_flight <= 3
    keys = [s["key"] for s in (await status(h, run["id"]))["steps"]]
    assert "each[9]" in keys


async def test_cancel_interrupts_a_running_request_within_a_second(h: Harness, upstream: Upstream) -> None:
    definition = {
        "steps": [
            {"id": "hang", "type": "http.request", "with": {"url": upstream.url("/slow")}},
            {"id": "never", "type": "transform", "with": {"value": 1}},
        ]
    }
    await save(h, "hang", definition)
    run = await execute(h, "hang", wait=0)
    await asyncio.wait_for(upstream.slow_started.wait(), 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await h.client.post(f"/api/v1/workflow/{run['id']}/cancel", headers=ADMIN)
    assert response.status_code == 200
    done = await until_status(h, run["id"], {"cancelled"}, seconds=1)
    assert loop.time() - started < 1.0
    await asyncio.wait_for(upstream.slow_cancelled.wait(), 1)
    steps = steps_by_key(done)
    assert steps["hang"]["status"] == "cancelled"
    assert steps["never"]["status"] == "cancelled"
    assert (await events(h, run["id"]))[-1]["type"] == "run.cancelled"


async def test_retry_runs_again_from_the_failed_step_reusing_earlier_outputs(h: Harness, upstream: Upstream) -> None:
    definition = {
        "steps": [
            {
                "id": "first",
                "type": "http.request",
                "with": {"url": upstream.url("/ok"), "method": "POST", "json": {"n": 1}},
            },
            {"id": "second", "type": "http.request", "with": {"url": upstream.url("/flaky/1")}},
            {
                "id": "third",
                "type": "transform",
                "with": {"value": "{{ steps.first.output.body.n }}+{{ steps.second.output.body.after }}"},
            },
        ]
    }
    await save(h, "resume", definition)
    run = await execute(h, "resume")
    assert run["status"] == "failed"
    assert run["error"]["step"] == "second"
    retried = await h.client.post(f"/api/v1/workflow/{run['id']}/retry", headers=ADMIN)
    assert retried.status_code == 200
    done = await until_status(h, run["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["result"] == "1+2"
    assert upstream.calls["/ok"] == 1  # the first step was not run again
    assert upstream.calls["/flaky/1"] == 2
    steps = steps_by_key(done)
    assert steps["second"]["attempt"] == 2  # attempts keep counting across a retry


async def test_a_wait_parks_the_run_until_its_time(h: Harness) -> None:
    definition = {
        "steps": [
            {"id": "nap", "type": "wait", "with": {"seconds": "{{ input.seconds }}"}},
            {"id": "after", "type": "transform", "with": {"value": "{{ steps.nap.output }}"}},
        ]
    }
    await save(h, "pause", definition)
    run = await execute(h, "pause", {"seconds": 30}, wait=0)
    waiting = await until_status(h, run["id"], {"waiting"})
    assert steps_by_key(waiting)["nap"]["waiting_for"]["until"]
    worker = h.runtime.workflow_worker
    assert worker is not None
    await worker.drain()
    assert (await status(h, run["id"]))["status"] == "waiting"  # not yet: the (injected) clock has not moved
    h.clock.advance(31)
    await worker.drain()
    done = await status(h, run["id"])
    assert done["status"] == "succeeded"
    assert done["result"] == {"waited_seconds": 30}


async def test_a_waiting_run_can_be_cancelled_and_retried(h: Harness) -> None:
    definition = {"steps": [{"id": "nap", "type": "wait", "with": {"seconds": 60}}]}
    await save(h, "nap", definition)
    run = await execute(h, "nap", wait=0)
    await until_status(h, run["id"], {"waiting"})
    cancelled = await h.client.post(f"/api/v1/workflow/{run['id']}/cancel", headers=ADMIN)
    assert cancelled.json()["data"]["status"] == "cancelled"
    again = await h.client.post(f"/api/v1/workflow/{run['id']}/retry", headers=ADMIN)
    assert again.status_code == 200
    await until_status(h, run["id"], {"waiting"})


async def test_a_sub_workflow_runs_and_its_result_flows_back(h: Harness) -> None:
    await save(h, "hello", HELLO)
    parent = {
        "steps": [
            {
                "id": "call",
                "type": "workflow.call",
                "with": {"workflow": "hello", "input": {"name": "{{ input.who }}"}},
            },
            {"id": "wrap", "type": "transform", "with": {"value": "got {{ steps.call.output.loud }}"}},
        ]
    }
    await save(h, "parent", parent)
    run = await execute(h, "parent", {"who": "Kid"})
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == "got HELLO, KID!"
    children = await h.client.get("/api/v1/workflow/history", params={"workflow": "hello"}, headers=ADMIN)
    [child] = children.json()["data"]["items"]
    assert child["parent_run_id"] == run["id"]


async def test_a_failing_sub_workflow_fails_its_step(h: Harness) -> None:
    await save(h, "hello", HELLO)
    parent = {"steps": [{"id": "call", "type": "workflow.call", "with": {"workflow": "hello", "input": {"name": 1}}}]}
    await save(h, "parent", parent)
    run = await execute(h, "parent")
    assert run["status"] == "failed"
    assert "input does not match" in run["error"]["message"]


async def test_a_run_keeps_the_version_it_started_with(h: Harness) -> None:
    v1 = {
        "steps": [
            {"id": "nap", "type": "wait", "with": {"seconds": 10}},
            {"id": "say", "type": "transform", "with": {"value": "v1"}},
        ]
    }
    await save(h, "versioned", v1)
    run = await execute(h, "versioned", wait=0)
    await until_status(h, run["id"], {"waiting"})
    v2 = {"steps": [{"id": "say", "type": "transform", "with": {"value": "v2"}}]}
    assert (await save(h, "versioned", v2))["version"] == 2
    h.clock.advance(11)
    assert h.runtime.workflow_worker is not None
    await h.runtime.workflow_worker.drain()
    done = await status(h, run["id"])
    assert (done["status"], done["result"], done["version"]) == ("succeeded", "v1", 1)
    assert (await execute(h, "versioned"))["result"] == "v2"


async def test_a_template_error_at_run_time_fails_the_step_clearly(h: Harness) -> None:
    definition = {"steps": [{"id": "read", "type": "transform", "with": {"value": "{{ input.missing.deeper }}"}}]}
    await save(h, "strict", definition)
    run = await execute(h, "strict", {})
    assert run["status"] == "failed"
    assert "missing" in run["error"]["message"]
    assert run["error"]["cause"]["type"] == "template_error"


async def test_the_sandbox_refuses_python_internals(h: Harness) -> None:
    definition = {
        "steps": [
            {"id": "evil", "type": "transform", "with": {"value": "{{ input.__class__.__mro__[1].__subclasses__() }}"}}
        ]
    }
    await save(h, "evil", definition)
    run = await execute(h, "evil", {})
    assert run["status"] == "failed"
    assert run["error"]["cause"]["type"] == "template_error"


async def test_http_steps_refuse_private_addresses(make_harness: Callable[..., Any]) -> None:
    async with make_harness() as h:  # no allowlist
        definition = {
            "steps": [
                {
                    "id": "meta",
                    "type": "http.request",
                    "retry": {"attempts": 3},
                    "with": {"url": "http://169.254.169.254/latest/meta-data/"},
                }
            ]
        }
        await save(h, "ssrf", definition)
        run = await execute(h, "ssrf")
        assert run["status"] == "failed"
        assert "may not be called" in run["error"]["message"]
        step = steps_by_key(await status(h, run["id"]))["meta"]
        assert step["attempt"] == 1  # refused, not retried


async def test_events_stream_as_server_sent_events_and_resume(h: Harness) -> None:
    await save(h, "hello", HELLO)
    run = await execute(h, "hello", {"name": "A"})
    headers = {**ADMIN, "Accept": "text/event-stream"}
    received: list[tuple[str, str, dict[str, Any]]] = []
    async with h.client.stream("GET", f"/api/v1/workflow/{run['id']}/events", headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                event[name] = value.strip()
            elif not line and "data" in event:
                received.append((event["id"], event["event"], json.loads(event["data"])))
                event = {}
    assert received[0][1] == "run.queued"
    assert received[-1][1] == "run.succeeded"
    last_seen = received[3][0]
    resumed: list[str] = []
    async with h.client.stream(
        "GET", f"/api/v1/workflow/{run['id']}/events", headers={**headers, "Last-Event-ID": last_seen}
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                resumed.append(line[3:].strip())
    assert resumed == [r[0] for r in received[4:]]
    bad = await h.client.get(f"/api/v1/workflow/{run['id']}/events", headers={**headers, "Last-Event-ID": "x"})
    assert bad.status_code == 400


async def test_step_types_are_listed_with_their_schemas(h: Harness) -> None:
    response = await h.client.get("/api/v1/workflow/step-types", headers=ADMIN)
    names = {item["name"]: item for item in response.json()["data"]}
    assert {
        "transform",
        "wait",
        "http.request",
        "ai.generate",
        "ai.chat",
        "ai.analyze",
        "context.search",
        "context.add",
        "n8n.trigger",
        "workflow.call",
        "dspy.run",
        "map",
    } <= set(names)
    assert names["http.request"]["side_effects"] is True
    assert "url" in names["http.request"]["config_schema"]["properties"]


async def test_runs_and_steps_are_counted_in_the_metrics(h: Harness) -> None:
    await save(h, "hello", HELLO)
    await execute(h, "hello", {"name": "A"})
    refused = await h.client.post("/api/v1/workflow/execute", json={"workflow": "hello", "input": {}}, headers=ADMIN)
    assert refused.status_code == 400  # no run, nothing counted
    text = (await h.client.get("/metrics", headers=ADMIN)).text
    assert 'trellis_workflow_runs_total{status="succeeded"} 1.0' in text
    assert 'trellis_workflow_steps_total{outcome="succeeded",type="transform"} 3.0' in text
    assert "trellis_workflow_runs_active 0.0" in text
