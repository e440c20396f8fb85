"""n8n.trigger against a real HTTP server playing n8n (webhook + executions API), and the stored,
encrypted n8n connections it uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Harness
from tests.workflows.fake_n8n import FakeN8n
from tests.workflows.support import ADMIN, events, execute, local_outbound, save, status, steps_by_key
from trellis.workflows.models import N8nConnection


@pytest.fixture
async def h(make_harness: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with make_harness(**local_outbound(n8n_poll_seconds=0.01, n8n_max_poll_seconds=0.05)) as harness:
        yield harness


@pytest.fixture
async def n8n(h: Harness) -> AsyncIterator[FakeN8n]:
    async with FakeN8n.running() as fake:
        response = await h.client.put(
            "/api/v1/n8n/connections/main", json={"base_url": fake.base_url, "api_key": fake.api_key}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        yield fake


def trigger(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "steps": [
            {
                "id": "n8n",
                "type": "n8n.trigger",
                "with": {"connection": "main", "path": path, "payload": {"name": "{{ input.name }}"}, **extra},
            }
        ]
    }


async def test_a_waiting_then_successful_execution_gives_its_result(h: Harness, n8n: FakeN8n) -> None:
    n8n.script("greet", statuses=["waiting", "running", "success"], result={"greeting": "hello Ada"})
    await save(h, "via-n8n", trigger("greet"))
    run = await execute(h, "via-n8n", {"name": "Ada"})
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["status"] == "success"
    assert run["result"]["result"] == {"greeting": "hello Ada"}
    [call] = n8n.webhook_calls("greet")
    assert call.body["name"] == "Ada"
    assert call.body["trellis"]["run_id"] == run["id"]
    assert call.headers["idempotency-key"] == f"{run['id']}:n8n:1"
    seen = [e["data"].get("status") for e in await events(h, run["id"]) if e["type"] == "n8n.status"]
    assert seen[-1] == "success"
    assert "waiting" in seen


async def test_an_error_execution_fails_the_step_with_n8ns_message(h: Harness, n8n: FakeN8n) -> None:
    n8n.script("broken", statuses=["running", "error"], error="Node 'Send mail' failed")
    await save(h, "via-n8n", trigger("broken"))
    run = await execute(h, "via-n8n", {"name": "Ada"})
    assert run["status"] == "failed"
    assert "Send mail" in run["error"]["message"]
    assert run["error"]["cause"]["n8n_status"] == "error"


async def test_an_unknown_execution_fails_the_step(h: Harness, n8n: FakeN8n) -> None:
    n8n.script("ghost", webhook_response={"executionId": "does-not-exist"})
    await save(h, "via-n8n", trigger("ghost"))
    run = await execute(h, "via-n8n", {"name": "Ada"})
    assert run["status"] == "failed"
    assert "not found" in run["error"]["message"]


async def test_a_webhook_without_an_execution_id_answers_directly(h: Harness, n8n: FakeN8n) -> None:
    n8n.script("direct", webhook_response={"answer": 42})
    await save(h, "via-n8n", trigger("direct"))
    run = await execute(h, "via-n8n", {"name": "Ada"})
    assert run["status"] == "succeeded"
    assert run["result"] == {"execution_id": None, "status": None, "result": {"answer": 42}}


async def test_a_missing_connection_fails_without_retrying(h: Harness, n8n: FakeN8n) -> None:
    definition = trigger("greet")
    definition["steps"][0]["with"]["connection"] = "nope"
    definition["steps"][0]["retry"] = {"attempts": 3, "backoff_seconds": 0}
    await save(h, "via-n8n", definition)
    run = await execute(h, "via-n8n", {"name": "Ada"})
    assert run["status"] == "failed"
    assert "no n8n connection named 'nope'" in run["error"]["message"]
    assert steps_by_key(await status(h, run["id"]))["n8n"]["attempt"] == 1
    assert n8n.calls == []


async def test_connections_keep_the_api_key_encrypted_and_hidden(h: Harness, n8n: FakeN8n) -> None:
    listed = await h.client.get("/api/v1/n8n/connections", headers=ADMIN)
    [connection] = listed.json()["data"]
    assert connection == {**connection, "name": "main", "base_url": n8n.base_url}
    assert "api_key" not in connection
    async with h.runtime.database.reader() as session:
        stored = (await session.execute(select(N8nConnection.api_key))).scalar_one()
    assert n8n.api_key not in stored
    _, key = await h.user_with_key("bob")
    theirs = await h.client.get("/api/v1/n8n/connections", headers={"Authorization": f"Bearer {key}"})
    assert theirs.json()["data"] == []
    deleted = await h.client.delete("/api/v1/n8n/connections/main", headers=ADMIN)
    assert deleted.status_code == 200
    again = await h.client.delete("/api/v1/n8n/connections/main", headers=ADMIN)
    assert again.status_code == 404


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:5678", "http://169.254.169.254", "http://10.0.0.8", "http://[::ffff:127.0.0.1]", "ftp://n8n"],
)
async def test_private_n8n_base_urls_are_refused(make_harness: Callable[..., Any], base_url: str) -> None:
    async with make_harness() as h:  # no allowlist
        response = await h.client.put(
            "/api/v1/n8n/connections/main", json={"base_url": base_url, "api_key": "k"}, headers=ADMIN
        )
        assert response.status_code == 400
        assert response.json()["error"]["details"]["fields"][0]["field"] == "base_url"


async def test_a_retry_follows_the_execution_it_already_started(h: Harness, n8n: FakeN8n) -> None:
    # n8n's API fails for longer than the client tolerates: the attempt fails, retryable. The
    # retry must follow the execution already started, not trigger the n8n workflow a second time.
    n8n.script("long", statuses=["running", "success"], result={"done": True}, poll_http_statuses=[503] * 6)
    definition = trigger("long")
    definition["steps"][0]["retry"] = {"attempts": 2, "backoff_seconds": 0}
    await save(h, "via-n8n", definition)
    run = await execute(h, "via-n8n", {"name": "Ada"})
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["result"] == {"done": True}
    assert len(n8n.webhook_calls("long")) == 1
    assert steps_by_key(await status(h, run["id"]))["n8n"]["attempt"] == 2


async def test_a_retry_after_a_failed_execution_triggers_again(h: Harness, n8n: FakeN8n) -> None:
    n8n.script("flaky", statuses=["error"], error="first time fails")
    definition = trigger("flaky")
    definition["steps"][0]["retry"] = {"attempts": 2, "backoff_seconds": 0}
    await save(h, "via-n8n", definition)
    run = await execute(h, "via-n8n", {"name": "Ada"})
    # n8n's error is not retryable (the workflow ran and failed): one trigger, the run fails.
    assert run["status"] == "failed"
    assert len(n8n.webhook_calls("flaky")) == 1
