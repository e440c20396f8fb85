"""An embedding model's ``query_prefix``: before search queries, never before stored text.

The model is served by a fake OpenAI-compatible upstream over real HTTP, which records every text it
was asked to embed and computes each vector from the text alone, so a test can also check that the
score a search gives is the cosine of the *prefixed* query's vector. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tests.auth.support import assert_ok
from tests.conftest import Harness
from tests.gateway.upstream import FakeUpstream

PREFIX = "Represent this question: "


def vector(model_id: str, text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(f"{model_id}|{text}".encode()).digest()[:8], "little")
    return [float(x) for x in np.random.default_rng(seed).standard_normal(8)]


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("q-embed",)).start()
    server.embedder = vector
    yield server
    server.stop()


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str, upstream: FakeUpstream) -> AsyncIterator[Harness]:
    upstream.reset()
    model = {
        "provider": "openai",
        "base_url": upstream.base_url,
        "model_id": "q-embed",
        "api_key": "sk-test",
        "capabilities": ["embed"],
        "context_window": 4096,
        "max_output_tokens": 1,
        "default_max_tokens": 1,
        "query_prefix": PREFIX,
    }
    settings = {"database_url": database_url, "models": {"q": model}, "gateway": {"default_embed_model": "q"}}
    async with make_harness(**settings) as harness:
        yield harness


def texts_embedded(upstream: FakeUpstream) -> list[str]:
    texts: list[str] = []
    for call in upstream.calls("embeddings"):
        given = call.body.get("input")
        texts.extend([given] if isinstance(given, str) else list(given or []))
    return texts


async def test_queries_get_the_prefix_and_stored_text_does_not(h: Harness, upstream: FakeUpstream) -> None:
    _, key = await h.user_with_key("alice")
    alice = h.auth(key)
    content = "Tide tables for the northern harbour"
    made = assert_ok(await h.client.post("/api/context", json={"type": "note", "content": content}, headers=alice), 201)

    params = {"query": "when is high water", "mode": "semantic"}
    data = assert_ok(await h.client.get("/api/context/search", params=params, headers=alice))

    embedded = texts_embedded(upstream)
    assert PREFIX + "when is high water" in embedded
    assert "when is high water" not in embedded
    # The stored text was embedded as written (whatever the index adds around it, no prefix).
    assert all(not text.startswith(PREFIX) for text in embedded if "Tide tables" in text)
    assert any("Tide tables" in text for text in embedded)
    [hit] = data["items"]
    assert hit["context"]["id"] == made["id"]
    stored = next(text for text in embedded if "Tide tables" in text)
    expected = cosine(vector("q-embed", PREFIX + "when is high water"), vector("q-embed", stored))
    assert hit["score"] == pytest.approx(expected, abs=1e-5)


async def test_the_openai_door_embeds_text_as_given(h: Harness, upstream: FakeUpstream) -> None:
    """``/v1/embeddings`` callers decide their own instruction: the gateway adds nothing."""
    _, key = await h.user_with_key("bob")
    body = {"model": "q", "input": ["when is high water"]}
    response = await h.client.post("/v1/embeddings", json=body, headers=h.auth(key))
    assert response.status_code == 200, response.text
    assert texts_embedded(upstream) == ["when is high water"]
