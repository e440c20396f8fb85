"""Usage series (calls, tokens, cost by model) belong to their user: real model calls through the
gateway to a fake OpenAI-compatible server (a real HTTP server), sampled by the collector."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Harness
from tests.gateway.upstream import FakeUpstream, Ok


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("fake-model",)).start()
    yield server
    server.stop()


@pytest.fixture
async def env(make_harness: Callable[..., Any], upstream: FakeUpstream) -> AsyncIterator[Harness]:
    upstream.reset()
    models = {
        "priced": {
            "provider": "openai",
            "base_url": upstream.base_url,
            "model_id": "fake-model",
            "api_key": "sk-test",
            "context_window": 4096,
            "max_output_tokens": 64,
            "price_per_1k_input": 1.0,
            "price_per_1k_output": 2.0,
        }
    }
    async with make_harness(models=models) as h:
        yield h


async def usage(h: Harness, headers: dict[str, str], series: str, **params: Any) -> Any:
    return await h.client.get("/api/v1/db/metrics", params={"series": series, **params}, headers=headers)


async def test_a_user_sees_their_own_usage_and_nobody_elses(env: Harness, upstream: FakeUpstream) -> None:
    h = env
    alice_id, alice_key = await h.user_with_key("alice")
    bob_id, bob_key = await h.user_with_key("bob")
    alice, bob = h.auth(alice_key), h.auth(bob_key)
    upstream.chat(Ok(prompt_tokens=10, completion_tokens=4), Ok(prompt_tokens=10, completion_tokens=4))
    await h.runtime.monitoring.collector.sample()
    h.clock.advance(10)
    for _ in range(2):
        response = await h.client.post("/api/v1/ai/generate", json={"model": "priced", "prompt": "hi"}, headers=alice)
        assert response.status_code == 200, response.text
    await h.runtime.monitoring.collector.sample()
    h.clock.advance(10)

    mine = await usage(h, alice, "usage.tokens", group_by="kind")
    assert mine.status_code == 200, mine.text
    totals = {tuple(line["labels"].values()): line["summary"]["total"] for line in mine.json()["data"]["lines"]}
    assert totals == {("prompt",): 20.0, ("completion",): 8.0}
    cost = (await usage(h, alice, "usage.cost")).json()["data"]["lines"][0]["summary"]["total"]
    assert cost == pytest.approx(2 * (10 * 1.0 + 4 * 2.0) / 1000)
    calls = await usage(h, alice, "usage.calls", label="status:ok")
    assert calls.json()["data"]["lines"][0]["summary"]["total"] == 2.0

    # Bob has none; asking for Alice's is a 404, as for any other user's object.
    assert (await usage(h, bob, "usage.tokens")).json()["data"]["lines"][0]["summary"]["total"] == 0.0
    denied = await usage(h, bob, "usage.tokens", user_id=alice_id)
    assert denied.status_code == 404
    assert denied.json()["error"]["code"] == "not_found_error"
    # System series are for administrators.
    forbidden = await usage(h, bob, "http.requests")
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "authorization_error"
    # The series list shows a developer only usage series.
    listed = (await h.client.get("/api/v1/db/metrics/series", headers=bob)).json()["data"]
    assert {item["name"] for item in listed} == {"usage.calls", "usage.tokens", "usage.cost"}

    # Administrators: one user's, or everyone's summed.
    admin = h.auth(ADMIN_KEY)
    one = await usage(h, admin, "usage.tokens", user_id=alice_id)
    assert one.json()["data"]["lines"][0]["summary"]["total"] == 28.0
    assert (await usage(h, admin, "usage.tokens", user_id=bob_id)).json()["data"]["lines"][0]["summary"]["total"] == 0
    everyone = await usage(h, admin, "usage.tokens")
    assert everyone.json()["data"]["lines"][0]["summary"]["total"] == 28.0
