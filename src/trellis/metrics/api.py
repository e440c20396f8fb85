"""``GET /metrics`` in the Prometheus text format, and ``GET /api/v1/metrics/system``: the same
registry summed into a few numbers (``SystemMetricsService``, which GraphQL's ``systemMetrics``
answers too)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trellis.auth.deps import Admin, RuntimeDep
from trellis.kit.envelope import Envelope, ok
from trellis.metrics.schemas import SystemMetricsOut

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=True, response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/api/v1/metrics/system",
    summary="This process's counters at a glance: requests, errors, model calls, tokens, cache, breakers, runs",
    description="Administrators only. Counts are this process's since it started; /metrics has the raw series.",
)
async def system_metrics(principal: Admin, runtime: RuntimeDep) -> Envelope[SystemMetricsOut]:
    return ok(runtime.system_metrics.snapshot())
