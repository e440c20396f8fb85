"""Helpers shared by the live-event tests (events, ws): a workflow run that waits on a hook until the
test releases it, so a test decides when "halfway" is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.conftest import Harness
from tests.workflows.support import ADMIN, execute, save, until_status
from trellis.kit.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

# Before the gate: run.queued, run.started, greet started + succeeded, approve started + waiting,
# run.waiting. After it: run.resumed, approve succeeded, decide started + succeeded, run.succeeded.
BEFORE_GATE = ["run.queued", "run.started", "step.started", "step.succeeded", "step.started", "step.waiting"]
AFTER_GATE = ["run.resumed", "step.succeeded", "step.started", "step.succeeded", "run.succeeded"]


@dataclass
class Gated:
    run_id: str
    hook: dict[str, Any]


async def start_gated_run(h: Harness, headers: dict[str, str] = ADMIN, name: str = "gated") -> Gated:
    """A run of greet → approve (waits for a hook) → decide, left waiting at approve."""
    response = await h.client.post("/api/v1/workflow/hooks", json={"name": name, "action": "resume"}, headers=headers)
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()["data"]
    definition = {
        "steps": [
            {"id": "greet", "type": "transform", "with": {"value": "hello"}},
            {
                "id": "approve",
                "type": "wait",
                "needs": ["greet"],
                "with": {"hook": hook["id"], "timeout_seconds": 3600},
            },
            {"id": "decide", "type": "transform", "with": {"value": "approved by {{ steps.approve.output.by }}"}},
        ]
    }
    await save(h, name, definition, headers=headers)
    run = await execute(h, name, wait=0, headers=headers)
    await until_status(h, run["id"], {"waiting"})
    return Gated(run["id"], hook)


async def release(h: Harness, gated: Gated) -> None:
    """Call the run's resume hook (it goes on to the end)."""
    body = json.dumps({"run_id": gated.run_id, "data": {"by": "test"}}).encode()
    now = str(int(h.clock.now().timestamp()))
    headers = {TIMESTAMP_HEADER: now, SIGNATURE_HEADER: sign(gated.hook["secret"], now, body)}
    response = await h.client.post(
        gated.hook["url"], content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text


async def stored_kinds(h: Harness, run_id: str, headers: dict[str, str] = ADMIN) -> list[tuple[int, str]]:
    response = await h.client.get(f"/api/v1/workflow/{run_id}/events", headers=headers)
    return [(e["seq"], e["type"]) for e in response.json()["data"]["items"]]
