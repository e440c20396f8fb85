"""``GET /metrics`` in the Prometheus text format; ``GET /api/v1/metrics/system`` (this process's
registry summed into a few numbers); and the history every replica writes: ``GET /api/v1/db/metrics``
(series by name, label filters, since/until/step, summaries), ``/api/v1/db/metrics/series`` (what
may be asked) and ``/api/v1/db/metrics/collector`` (this process's collector). All through
``MetricsService``, which GraphQL and the CLI call too."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trellis.auth.deps import Admin, Reader, RuntimeDep
from trellis.kit.envelope import Envelope, ok
from trellis.metrics.schemas import (
    CollectorStatusOut,
    MetricQuery,
    MetricSeriesOut,
    SeriesInfo,
    SystemMetricsOut,
    parse_labels,
    split_names,
)

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
    return ok(runtime.metrics.snapshot())


@router.get(
    "/api/v1/db/metrics",
    tags=["metrics"],
    summary="Metric history: a series over time, combined across replicas, with summaries",
    description=(
        "Usage series (usage.calls, usage.tokens, usage.cost) are yours (administrators: anyone's, or all "
        "users' summed); system series are for administrators. Counters are summed, histograms merged "
        "before percentiles are computed, gauges combined as the series says."
    ),
)
async def query_metrics(
    principal: Reader,
    runtime: RuntimeDep,
    series: Annotated[str, Query(min_length=1, max_length=64, description="A series name, e.g. http.requests.")],
    label: Annotated[
        list[str], Query(max_length=20, description="name:value; repeat for several (all must match).")
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    group_by: Annotated[
        list[str], Query(max_length=10, description="Label names: one line per value (repeat or comma-separate).")
    ] = [],  # noqa: B006
    user_id: Annotated[str | None, Query(max_length=40, description="Usage series: whose (admins).")] = None,
    since: Annotated[datetime | None, Query(description="Start (ISO 8601; default until - 1 h).")] = None,
    until: Annotated[datetime | None, Query(description="End (ISO 8601; default now).")] = None,
    step: Annotated[int | None, Query(ge=1, le=31 * 86_400, description="Seconds per point.")] = None,
    fn: Annotated[str | None, Query(max_length=16, description="See GET /api/v1/db/metrics/series.")] = None,
) -> Envelope[MetricSeriesOut]:
    query = MetricQuery(
        series=series,
        labels=parse_labels(label),
        group_by=split_names(group_by),
        user_id=user_id,
        since=since,
        until=until,
        step=step,
        fn=fn,
    )
    return ok(await runtime.metrics.query(principal, query))


@router.get(
    "/api/v1/db/metrics/series",
    tags=["metrics"],
    summary="The series you may query: kind, unit, labels, functions",
)
async def list_series(principal: Reader, runtime: RuntimeDep) -> Envelope[list[SeriesInfo]]:
    return ok(runtime.metrics.catalogue(principal))


@router.get(
    "/api/v1/db/metrics/collector",
    tags=["metrics"],
    summary="This process's collector: samples, rows written, intervals skipped and the last gap",
)
async def collector_status(principal: Admin, runtime: RuntimeDep) -> Envelope[CollectorStatusOut]:
    return ok(runtime.metrics.collector_status())
