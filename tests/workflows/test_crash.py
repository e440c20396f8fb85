"""The embedded server killed with SIGKILL mid-run, then started again on the same data directory:
the run finishes. Real `trellis serve` processes; the test's own HTTP server plays the outside."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, JWT_SECRET
from tests.processes import Process, start_server, wait_ready
from tests.workflows.support import Upstream, running_upstream

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
LEASE_SECONDS = 2


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "TRELLIS_DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_JWT_SECRET": JWT_SECRET,
        "TRELLIS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "TRELLIS_LOG_LEVEL": "WARNING",
        "TRELLIS_WORKFLOW__LEASE_SECONDS": str(LEASE_SECONDS),
        "TRELLIS_WORKFLOW__POLL_SECONDS": "0.2",
        "TRELLIS_WORKFLOW__OUTBOUND_ALLOW": '["127.0.0.1/32"]',
    }


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as server:
        yield server


async def started(name: str, env: dict[str, str], workdir: Path) -> Process:
    server = start_server(name, env, workdir)
    await wait_ready(server)
    return server


async def run_until(client: httpx.AsyncClient, run_id: str, wanted: set[str], seconds: float) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        while True:
            response = await client.get(f"/api/v1/workflow/status/{run_id}", headers=ADMIN)
            data: dict[str, Any] = response.json()["data"]
            if data["status"] in wanted:
                return data
            await asyncio.sleep(0.05)


async def test_a_waiting_run_survives_a_killed_server(env: dict[str, str], tmp_path: Path) -> None:
    first = await started("first", env, tmp_path)
    second: Process | None = None
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
            definition = {
                "steps": [
                    {"id": "nap", "type": "wait", "with": {"seconds": "{{ input.seconds }}"}},
                    {"id": "done", "type": "transform", "with": {"value": "woke after {{ input.seconds }}"}},
                ]
            }
            await client.put("/api/v1/workflows/pause", json={"definition": definition}, headers=ADMIN)
            response = await client.post(
                "/api/v1/workflow/execute", json={"workflow": "pause", "input": {"seconds": 2}}, headers=ADMIN
            )
            run_id = response.json()["data"]["id"]
            await run_until(client, run_id, {"waiting"}, 10)
        first.kill()
        second = await started("second", env, tmp_path)
        async with httpx.AsyncClient(base_url=second.url, timeout=10) as client:
            done = await run_until(client, run_id, {"succeeded", "failed"}, 20)
        assert done["status"] == "succeeded", (done, second.output())
        assert done["result"] == "woke after 2"
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_a_step_in_flight_when_the_server_dies_runs_again_with_the_same_key(
    env: dict[str, str], tmp_path: Path, upstream: Upstream
) -> None:
    first = await started("first", env, tmp_path)
    second: Process | None = None
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
            definition = {"steps": [{"id": "call", "type": "http.request", "with": {"url": upstream.url("/slow")}}]}
            await client.put("/api/v1/workflows/slow", json={"definition": definition}, headers=ADMIN)
            response = await client.post("/api/v1/workflow/execute", json={"workflow": "slow"}, headers=ADMIN)
            run_id = response.json()["data"]["id"]
            await asyncio.wait_for(upstream.slow_started.wait(), 10)
        first.kill()
        upstream.slow_started.clear()
        second = await started("second", env, tmp_path)
        # Once the dead server's lease has expired, the new one runs the step again.
        await asyncio.wait_for(upstream.slow_started.wait(), LEASE_SECONDS + 10)
        assert upstream.calls["/slow"] == 2
        keys = [headers["Idempotency-Key"] for headers in upstream.headers]
        assert keys == [f"{run_id}:call:1"] * 2  # the same attempt: the far side can drop the repeat
        async with httpx.AsyncClient(base_url=second.url, timeout=10) as client:
            detail = (await client.get(f"/api/v1/workflow/status/{run_id}", headers=ADMIN)).json()["data"]
            assert detail["status"] == "running"
            events = (await client.get(f"/api/v1/workflow/{run_id}/events", headers=ADMIN)).json()["data"]["items"]
            assert "step.lost" in [e["type"] for e in events]
            cancelled = await client.post(f"/api/v1/workflow/{run_id}/cancel", headers=ADMIN)
            assert cancelled.status_code == 200
            await run_until(client, run_id, {"cancelled"}, 5)
    finally:
        first.stop()
        if second is not None:
            second.stop()
