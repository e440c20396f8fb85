"""Liveness and readiness against real backends, including ones that have gone away."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.conftest import POSTGRES_SERVER, REDIS_URL, Harness
from trellis.app import create_app


async def test_health_is_alive(harness: Harness) -> None:
    response = await harness.client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_on_embedded(harness: Harness) -> None:
    response = await harness.client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["backend"] == "sqlite"
    assert "redis" not in body["checks"]


async def test_ready_with_postgres_and_redis(make_harness: Any, postgres_url: str) -> None:
    async with make_harness(database_url=postgres_url, redis_url=REDIS_URL) as h:
        response = await h.client.get("/ready")
        assert response.status_code == 200, response.text
        checks = response.json()["checks"]
        assert checks["database"]["backend"] == "postgresql"
        assert checks["redis"]["ok"] is True


async def test_unreachable_redis_named(make_harness: Any) -> None:
    async with make_harness(redis_url="redis://127.0.0.1:1/0") as h:
        response = await h.client.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["failing"] == ["redis"]
        assert body["checks"]["redis"]["ok"] is False
        assert body["checks"]["redis"]["error"]
        assert body["checks"]["database"]["ok"] is True


async def test_database_that_went_away_named(make_harness: Any, postgres_url: str) -> None:
    async with make_harness(database_url=postgres_url) as h:
        assert (await h.client.get("/ready")).status_code == 200
        name = postgres_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(f"postgresql://{POSTGRES_SERVER}/postgres")
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        response = await h.client.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["failing"] == ["database"]
        assert body["checks"]["database"]["error"]


async def test_unmigrated_database_is_not_ready(make_settings: Any, tmp_path: Any) -> None:
    import httpx

    app = create_app(make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "trellis migrate" in response.json()["checks"]["database"]["error"]


async def test_ready_reports_the_event_bus(make_harness: Any) -> None:
    async with make_harness() as h:
        body = (await h.client.get("/ready")).json()
        assert body["checks"]["events"] == {"ok": True, "backend": "memory", "state": "in-process"}
        assert body["degraded"] == []
    async with make_harness(redis_url=REDIS_URL) as h:
        body = (await h.client.get("/ready")).json()
        assert body["status"] == "ready"
        assert body["checks"]["events"] == {"ok": True, "backend": "redis", "state": "connected"}
