"""Model-call steps against the real local model (llama.cpp, SmolLM2): they go through the gateway as
the run's owner and land in the episodic log with door `workflow`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import Harness
from tests.workflows.support import ADMIN, execute, save
from trellis.auth.schemas import Scope


@pytest.fixture
async def h(make_harness: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with make_harness() as harness:
        yield harness


async def test_generate_and_analyze_steps_call_the_local_model(h: Harness) -> None:
    definition = {
        "steps": [
            {
                "id": "write",
                "type": "ai.generate",
                "with": {"prompt": "Say hello to {{ input.name }}.", "max_tokens": 8, "temperature": 0, "seed": 1},
            },
            {
                "id": "judge",
                "type": "ai.analyze",
                "with": {
                    "content": "I love this product, it is great!",
                    "analysis_type": "sentiment",
                    "max_tokens": 60,
                    "temperature": 0,
                    "seed": 1,
                },
            },
        ],
        "output": {
            "text": "{{ steps.write.output.response }}",
            "tokens": "{{ steps.write.output.tokens_used }}",
            "sentiment": "{{ steps.judge.output.result }}",
        },
    }
    await save(h, "ai", definition)
    run = await execute(h, "ai", {"name": "Ada"}, wait=120)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["text"].strip()
    assert run["result"]["tokens"] > 0
    assert isinstance(run["result"]["sentiment"], dict)
    await h.runtime.logs.flush()
    logs = await h.client.get("/api/v1/db/logs", params={"door": "workflow"}, headers=ADMIN)
    doors = [item["door"] for item in logs.json()["data"]["items"]]
    assert doors.count("workflow") >= 2


async def test_a_run_started_without_the_ai_scope_cannot_call_models(h: Harness) -> None:
    user_id = await h.create_user("reader")
    _, key = await h.create_key(user_id, scopes=[Scope.READ, Scope.WRITE])
    headers = {"Authorization": f"Bearer {key}"}
    definition = {"steps": [{"id": "write", "type": "ai.generate", "with": {"prompt": "hi", "max_tokens": 4}}]}
    await save(h, "ai", definition, headers=headers)
    run = await execute(h, "ai", headers=headers)
    assert run["status"] == "failed"
    assert "no 'ai' scope" in run["error"]["message"]
