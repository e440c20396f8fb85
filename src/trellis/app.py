"""The FastAPI app factory: routers, the request edge, error handlers and the runtime's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from trellis import __version__
from trellis.alerts.api import router as alerts_router
from trellis.auth.api import router as auth_router
from trellis.context.api import router as context_router
from trellis.context.index.api import router as reindex_router
from trellis.context.ingest.api import INGEST_PATH
from trellis.context.ingest.api import router as ingest_router
from trellis.context.search.api import router as search_router
from trellis.dashboard.api import router as dashboard_router
from trellis.dashboard.api import static_files as dashboard_static
from trellis.dspy.api import router as dspy_router
from trellis.episodic.api import router as logs_router
from trellis.gateway.api import router as gateway_router
from trellis.gateway.openai_api import router as openai_router
from trellis.graphql.router import graphql_router
from trellis.health.api import router as health_router
from trellis.kit.clock import Clock
from trellis.kit.handlers import install_error_handlers
from trellis.kit.heap import settle_heap
from trellis.kit.http_metrics import HttpMetrics
from trellis.kit.middleware import RequestEdgeMiddleware
from trellis.kit.openapi import install_openapi
from trellis.metrics.api import router as metrics_router
from trellis.runtime import Runtime, build_runtime
from trellis.settings import Settings, load_settings
from trellis.vectors.api import router as vectors_router
from trellis.workflows.api import definitions as workflow_definitions_router
from trellis.workflows.api import n8n as n8n_router
from trellis.workflows.api import runs as workflow_runs_router
from trellis.ws.api import router as ws_router

# The uvicorn WebSocket protocol Trellis is served with (``trellis serve``, and the tests' real
# servers): the sans-I/O one takes about a fifth less CPU per frame than uvicorn's default, which is
# built on the ``websockets`` library's deprecated legacy API (1,000 clients, bench/ws_fanout.py).
UVICORN_WS_PROTOCOL = "websockets-sansio"

DESCRIPTION = """
Trellis is a self-hosted AI development ecosystem server.

Authenticate with an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) or a JWT from
`POST /api/v1/auth/token`. Every `/api/...` response is an envelope:
`{success, data, error, timestamp, request_id}`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    jitter: Callable[[], float] | None = None,
) -> FastAPI:
    """``clock``, and the gateway's backoff ``sleep`` and ``jitter``, are injectable for tests."""
    settings = settings or load_settings()
    # Built eagerly so configuration errors (a short secret, a missing one) stop start-up at once.
    runtime = build_runtime(settings, clock=clock, sleep=sleep, jitter=jitter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()  # the log writer, and the indexer (which first sweeps for unembedded contexts)
        settle_heap(settings.gc_young_threshold)  # fewer, shorter GC pauses from now on (kit/heap.py)
        try:
            yield
        finally:
            await runtime.close()  # drains the indexer and the log writer, then closes the backends

    app = FastAPI(
        title="Trellis",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    metrics = HttpMetrics(runtime.registry)
    app.state.runtime = runtime
    app.state.metrics = metrics
    install_error_handlers(app)
    install_openapi(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-Match", "X-Request-ID"],
            expose_headers=["X-Request-ID", "ETag", "RateLimit", "RateLimit-Policy", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(
        RequestEdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        # Uploads need more than the global limit; each file is further held to ingest_max_file_bytes.
        body_limits={INGEST_PATH: settings.context.ingest_max_request_bytes},
    )
    if settings.trusted_proxies:
        # Outermost: the client address every layer sees (login limits, logs) is the forwarded one
        # only when the peer is a trusted proxy. `trellis serve` turns uvicorn's own handling off.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.include_router(health_router)
    app.include_router(metrics_router)
    if settings.graphql.enabled:  # early: one path, matched before the REST routes are tried
        app.include_router(graphql_router(settings))
    app.include_router(auth_router)
    app.include_router(logs_router)
    app.include_router(gateway_router)
    app.include_router(openai_router)
    # Static /api/context/... routers (search, ingest) go here, before the core's /api/context/{id}.
    app.include_router(search_router)
    app.include_router(ingest_router)
    app.include_router(reindex_router)
    app.include_router(context_router)
    app.include_router(vectors_router)
    app.include_router(workflow_definitions_router)
    app.include_router(workflow_runs_router)
    app.include_router(n8n_router)
    app.include_router(dspy_router)
    app.include_router(ws_router)
    app.include_router(alerts_router)
    if settings.dashboard.enabled:
        app.include_router(dashboard_router)
        app.mount("/dashboard/static", dashboard_static(), name="dashboard-static")
    return app


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime
