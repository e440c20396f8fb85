"""The FastAPI app factory: routers, the request edge, error handlers and the runtime's lifespan."""

from __future__ import annotations

import gc
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
    freeze_gc: bool = False,
) -> FastAPI:
    """``clock``, and the gateway's backoff ``sleep`` and ``jitter``, are injectable for tests.
    ``freeze_gc``: see ``served_app``."""
    settings = settings or load_settings()
    # Built eagerly so configuration errors (a short secret, a missing one) stop start-up at once.
    runtime = build_runtime(settings, clock=clock, sleep=sleep, jitter=jitter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()  # the log writer, and the indexer (which first sweeps for unembedded contexts)
        if freeze_gc:
            freeze_startup_objects()
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


def served_app() -> FastAPI:
    """The app ``trellis serve`` runs (uvicorn's factory): ``create_app`` whose start-up ends with
    ``freeze_startup_objects``."""
    return create_app(freeze_gc=True)


def freeze_startup_objects() -> None:
    """Move every object alive after start-up (modules, the app, its routes and schemas, the
    runtime: about 250,000 objects) to the garbage collector's permanent generation (``gc.freeze``),
    so its full collections no longer walk them. Requests leave garbage in reference cycles that
    only those collections free (a GraphQL request about 150 objects: graphql-core's executor holds
    bound methods of itself); at 16 requests in flight a full collection ran every second or so and
    walked the whole heap each time (in-process, GraphQL's CPU per request fell by about a fifth:
    ``bench/README.md``, ``graphql_vs_rest.py``). Not for tests: objects frozen are never collected,
    and a test process builds many apps."""
    gc.collect()
    gc.freeze()


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime
