"""Inbound hooks: signed deliveries start a workflow or wake a waiting step; anything else starts nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import Harness
from tests.workflows.support import ADMIN, execute, save, status, until_status
from trellis.kit.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

GREET = {"steps": [{"id": "greet", "type": "transform", "with": {"value": "hi {{ input.name }}"}}]}


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str) -> AsyncIterator[Harness]:
    async with make_harness(database_url=database_url) as harness:
        yield harness


async def create_hook(h: Harness, **body: Any) -> dict[str, Any]:
    response = await h.client.post("/api/v1/workflow/hooks", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def signed(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, str(timestamp), body),
        "Content-Type": "application/json",
    }


async def runs_of(h: Harness, workflow: str) -> list[dict[str, Any]]:
    response = await h.client.get("/api/v1/workflow/history", params={"workflow": workflow}, headers=ADMIN)
    items: list[dict[str, Any]] = response.json()["data"]["items"]
    return items


async def test_a_signed_delivery_starts_the_workflow_once(h: Harness) -> None:
    await save(h, "greet", GREET)
    hook = await create_hook(h, name="from n8n", action="start", workflow="greet")
    assert hook["url"] == f"/api/v1/workflow/hooks/{hook['id']}"
    body = json.dumps({"input": {"name": "n8n"}}).encode()
    now = int(h.clock.now().timestamp())
    headers = signed(hook["secret"], body, now)
    response = await h.client.post(hook["url"], content=body, headers=headers)
    assert response.status_code == 202, response.text
    run_id = response.json()["data"]["run_id"]
    done = await until_status(h, run_id, {"succeeded"})
    assert done["result"] == "hi n8n"
    # The same delivery again (a replay) is refused and starts nothing.
    replay = await h.client.post(hook["url"], content=body, headers=headers)
    assert replay.status_code == 401
    assert "replay" in replay.json()["error"]["message"]
    assert len(await runs_of(h, "greet")) == 1
    listed = await h.client.get("/api/v1/workflow/hooks", headers=ADMIN)
    assert listed.json()["data"][0]["last_used_at"] is not None
    assert "secret" not in listed.json()["data"][0]


@pytest.mark.parametrize(
    "problem", ["no signature", "wrong secret", "body changed", "stale", "future", "bad timestamp"]
)
async def test_bad_deliveries_are_401_and_start_nothing(h: Harness, problem: str) -> None:
    await save(h, "greet", GREET)
    hook = await create_hook(h, name="n", action="start", workflow="greet")
    body = b'{"name": "x"}'
    now = int(h.clock.now().timestamp())
    headers = signed(hook["secret"], body, now)
    if problem == "no signature":
        headers = {}
    elif problem == "wrong secret":
        headers = signed("not-the-secret", body, now)
    elif problem == "body changed":
        body = b'{"name": "y"}'
    elif problem == "stale":
        headers = signed(hook["secret"], body, now - 301)
    elif problem == "future":
        headers = signed(hook["secret"], body, now + 301)
    elif problem == "bad timestamp":
        headers = {**headers, TIMESTAMP_HEADER: "yesterday"}
    response = await h.client.post(hook["url"], content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_error"
    assert await runs_of(h, "greet") == []


async def test_unknown_and_revoked_hooks_are_404(h: Harness) -> None:
    await save(h, "greet", GREET)
    hook = await create_hook(h, name="n", action="start", workflow="greet")
    body = b"{}"
    now = int(h.clock.now().timestamp())
    unknown = await h.client.post("/api/v1/workflow/hooks/hook_nope", content=body, headers=signed("x", body, now))
    assert unknown.status_code == 404
    _, key = await h.user_with_key("eve")
    stolen = await h.client.delete(f"/api/v1/workflow/hooks/{hook['id']}", headers={"Authorization": f"Bearer {key}"})
    assert stolen.status_code == 404
    revoked = await h.client.delete(f"/api/v1/workflow/hooks/{hook['id']}", headers=ADMIN)
    assert revoked.json()["data"]["revoked_at"] is not None
    late = await h.client.post(hook["url"], content=body, headers=signed(hook["secret"], body, now))
    assert late.status_code == 404
    assert await runs_of(h, "greet") == []


async def test_a_resume_hook_wakes_the_waiting_step_with_its_data(h: Harness) -> None:
    hook = await create_hook(h, name="approval", action="resume")
    definition = {
        "steps": [
            {"id": "approve", "type": "wait", "with": {"hook": hook["id"], "timeout_seconds": 3600}},
            {"id": "decide", "type": "transform", "with": {"value": "approved by {{ steps.approve.output.by }}"}},
        ]
    }
    await save(h, "approval", definition)
    run = await execute(h, "approval", wait=0)
    waiting = await until_status(h, run["id"], {"waiting"})
    assert waiting["steps"][0]["waiting_for"]["hook_id"] == hook["id"]
    now = int(h.clock.now().timestamp())
    wrong_run = json.dumps({"run_id": "run_other", "data": {}}).encode()
    response = await h.client.post(hook["url"], content=wrong_run, headers=signed(hook["secret"], wrong_run, now))
    assert response.status_code == 404
    body = json.dumps({"run_id": run["id"], "data": {"by": "Grace"}}).encode()
    response = await h.client.post(hook["url"], content=body, headers=signed(hook["secret"], body, now))
    assert response.status_code == 202, response.text
    done = await until_status(h, run["id"], {"succeeded"})
    assert done["result"] == "approved by Grace"
    # A second resume finds nothing waiting.
    again = json.dumps({"run_id": run["id"], "data": {"by": "Mallory"}, "n": 2}).encode()
    late = await h.client.post(hook["url"], content=again, headers=signed(hook["secret"], again, now))
    assert late.status_code == 409


async def test_a_hook_wait_times_out(h: Harness) -> None:
    hook = await create_hook(h, name="approval", action="resume")
    definition = {"steps": [{"id": "approve", "type": "wait", "with": {"hook": hook["id"], "timeout_seconds": 60}}]}
    await save(h, "approval", definition)
    run = await execute(h, "approval", wait=0)
    await until_status(h, run["id"], {"waiting"})
    h.clock.advance(61)
    assert h.runtime.workflow_worker is not None
    await h.runtime.workflow_worker.drain()
    done = await status(h, run["id"])
    assert done["status"] == "failed"
    assert done["error"]["cause"]["type"] == "wait_timeout"


async def test_hook_requests_are_checked(h: Harness) -> None:
    c = h.client
    no_workflow = await c.post("/api/v1/workflow/hooks", json={"name": "x", "action": "start"}, headers=ADMIN)
    assert no_workflow.status_code == 400
    unknown = await c.post(
        "/api/v1/workflow/hooks", json={"name": "x", "action": "start", "workflow": "nope"}, headers=ADMIN
    )
    assert unknown.status_code == 404
    bad_action = await c.post("/api/v1/workflow/hooks", json={"name": "x", "action": "explode"}, headers=ADMIN)
    assert bad_action.status_code == 400
    anonymous = await c.post("/api/v1/workflow/hooks", json={"name": "x", "action": "resume"})
    assert anonymous.status_code == 401
