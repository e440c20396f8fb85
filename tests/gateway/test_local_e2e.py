"""End to end on the real local model (SmolLM2-135M through llama.cpp), with no configuration."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Harness


async def test_generate_with_no_configuration(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.post(
        "/api/v1/ai/generate",
        headers=admin_headers,
        json={"prompt": "Name a primary color.", "max_tokens": 16, "temperature": 0},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["response"].strip()
    assert data["model"] == "smollm2-135m"
    assert data["provider"] == "llamacpp"
    assert data["completion_tokens"] > 0
    assert data["prompt_tokens"] > 10
    assert data["tokens_used"] == data["prompt_tokens"] + data["completion_tokens"]
    assert data["cached"] is False


async def test_seed_alias_and_stream(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.post(
        "/api/v1/ai/chat",
        headers=admin_headers,
        json={
            "messages": [{"role": "user", "content": "Say hi."}],
            "model": "cursor-native-ai",
            "max_tokens": 12,
            "stream": True,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    names = [e.splitlines()[0].removeprefix("event: ") for e in events]
    assert names[-1] == "done"
    assert "delta" in names
    done: dict[str, Any] = json.loads(events[-1].splitlines()[1].removeprefix("data: "))
    deltas = "".join(json.loads(e.splitlines()[1].removeprefix("data: "))["text"] for e in events[:-1])
    assert done["response"] == deltas
    assert done["model"] == "smollm2-135m"
