from __future__ import annotations

import pytest

from tests.conftest import Harness


async def test_generated_when_absent(harness: Harness) -> None:
    first = await harness.client.get("/health")
    second = await harness.client.get("/health")
    assert first.headers["x-request-id"].startswith("req_")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_sane_incoming_id_is_kept(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/auth/me", headers={"X-Request-ID": "trace-abc.123:xyz"})
    assert response.headers["x-request-id"] == "trace-abc.123:xyz"
    assert response.json()["request_id"] == "trace-abc.123:xyz"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", 'quote"', ""])
async def test_insane_incoming_id_is_replaced(harness: Harness, bad: str) -> None:
    response = await harness.client.get("/health", headers={"X-Request-ID": bad})
    assert response.headers["x-request-id"] != bad
    assert response.headers["x-request-id"].startswith("req_")
