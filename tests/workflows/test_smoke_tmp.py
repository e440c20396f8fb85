from typing import Any

from tests.conftest import ADMIN_KEY

H = {"Authorization": f"Bearer {ADMIN_KEY}"}

HELLO = {
    "input_schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    "steps": [
        {"id": "greet", "type": "transform", "with": {"value": "Hello, {{ input.name }}!"}},
        {"id": "shout", "type": "transform", "with": {"value": "{{ steps.greet.output | upper }}"}},
        {"id": "both", "type": "transform", "with": {"value": {"a": "{{ steps.greet.output }}", "b": "{{ steps.shout.output }}"}}},
    ],
}


async def test_smoke(harness: Any) -> None:
    c = harness.client
    r = await c.post("/api/v1/workflows", json={"name": "hello", "definition": HELLO}, headers=H)
    print(r.json())
    assert r.status_code == 201
    r = await c.post("/api/v1/workflow/execute", json={"workflow": "hello", "input": {"name": "Ada"}, "wait": 5}, headers=H)
    print(r.json())
    assert r.status_code == 200
    run_id = r.json()["data"]["id"]
    r = await c.get(f"/api/v1/workflow/status/{run_id}", headers=H)
    print(r.json())
    r = await c.get(f"/api/v1/workflow/{run_id}/events", headers=H)
    print(r.json())
