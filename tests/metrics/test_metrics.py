from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Harness


async def test_requests_counted_by_route_template_and_status(harness: Harness, admin_headers: dict[str, str]) -> None:
    await harness.client.get("/api/v1/auth/me", headers=admin_headers)
    await harness.client.get("/api/v1/auth/me")
    await harness.client.delete("/api/v1/keys/key_nope", headers=admin_headers)
    response = await harness.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }

    def count(route: str, status: str, method: str = "GET") -> float:
        key = ("trellis_http_requests_total", (("method", method), ("route", route), ("status", status)))
        return samples.get(key, 0.0)

    assert count("/api/v1/auth/me", "200") == 1
    assert count("/api/v1/auth/me", "401") == 1
    # The template, not the concrete id, so label cardinality stays bounded.
    assert count("/api/v1/keys/{key_id}", "404", "DELETE") == 1
    histogram_count = (
        "trellis_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/api/v1/auth/me")),
    )
    assert samples[histogram_count] == 2


async def test_openapi_docs_served(harness: Harness) -> None:
    assert (await harness.client.get("/docs")).status_code == 200
    spec = (await harness.client.get("/openapi.json")).json()
    assert "/api/v1/auth/token" in spec["paths"]
    assert "/api/v1/keys/{key_id}" in spec["paths"]
