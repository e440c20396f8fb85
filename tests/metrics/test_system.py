"""GET /api/v1/metrics/system: the process's own registry summed (what GraphQL's systemMetrics answers)."""

from __future__ import annotations

from tests.auth.support import assert_error, assert_ok
from tests.conftest import Harness


async def test_system_metrics_sum_the_registry_for_admins(harness: Harness, admin_headers: dict[str, str]) -> None:
    _, key = await harness.user_with_key("alice")
    await harness.client.get("/api/v1/auth/me", headers=admin_headers)
    await harness.client.get("/api/v1/auth/me")  # 401
    harness.runtime.gateway.metrics.tokens.labels("m", "prompt").inc(7)
    harness.runtime.gateway.metrics.tokens.labels("m", "completion").inc(3)
    harness.runtime.gateway.metrics.cache.labels("hit_l1").inc()
    harness.runtime.gateway.metrics.breaker_state.labels("openai:http://x").set(1)
    harness.runtime.workflow_parts.metrics.runs.labels("succeeded").inc(2)

    data = assert_ok(await harness.client.get("/api/v1/metrics/system", headers=admin_headers))
    assert data["http"]["requests"] == 2
    assert data["http"]["client_errors"] == 1
    assert data["models"]["prompt_tokens"] == 7
    assert data["models"]["tokens"] == 10
    assert data["models"]["cache_hits"] == 1
    assert data["breakers"] == [{"endpoint": "openai:http://x", "open": True}]
    assert data["workflows"]["runs_ended"] == {"succeeded": 2}
    assert data["uptime_seconds"] >= 0

    assert_error(
        await harness.client.get("/api/v1/metrics/system", headers=Harness.auth(key)), 403, "authorization_error"
    )
    assert_error(await harness.client.get("/api/v1/metrics/system"), 401, "authentication_error")
