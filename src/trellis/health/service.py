"""Readiness: can this replica serve? Checks the database (reachable, schema current) and Redis, and
reports the event bus: a bus that lost Redis is *degraded* (live events reach only this replica's
clients until it is back), named in ``degraded`` without failing the probe by itself. So is a search
reranker that cannot load (searches asking for a rerank answer without it): its status is a cheap
check that never loads the model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from trellis.events.base import EventBus
from trellis.storage.database import Database
from trellis.storage.migrate import current_revision, head_revision

CHECK_TIMEOUT_SECONDS = 2.0


async def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", named in the answer
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return {"ok": False, "error": message, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    result: dict[str, Any] = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    if detail:
        result.update(detail)
    return result


async def readiness(
    database: Database,
    redis: Redis | None,
    bus: EventBus | None = None,
    reranker: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``reranker``: the search reranker's status report (``ok``, and ``error`` when not), if there is one."""

    async def schema() -> dict[str, Any]:
        revision = await current_revision(database)
        head = head_revision()
        if revision != head:
            raise RuntimeError(f"schema at {revision}, expected {head}: run `trellis migrate`")
        return {"backend": database.dialect, "revision": revision}

    checks: dict[str, Any] = {"database": await _timed(schema)}
    if redis is not None:
        client = redis

        async def ping() -> dict[str, Any]:
            await client.ping()
            return {}

        checks["redis"] = await _timed(ping)
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    degraded: list[str] = []
    if bus is not None:
        health = await bus.probe()
        checks["events"] = health.report()
        if not health.ok:
            degraded.append("events")
    if reranker is not None:
        checks["reranker"] = reranker()
        if not checks["reranker"]["ok"]:
            degraded.append("reranker")
    status = "not_ready" if failing else "degraded" if degraded else "ready"
    return {"status": status, "failing": failing, "degraded": degraded, "checks": checks}
