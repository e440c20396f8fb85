"""The composition root: builds the backends the settings ask for (database, Redis, limiter,
caches, services), starts their background workers and closes everything in order.

This is the only place that chooses between embedded and distributed implementations. Only doors
(``api.py`` modules, the OpenAI door, ``cli/``, ``app.py``) import it; services receive what they
need through their constructors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from trellis.alerts.evaluator import AlertEvaluator
from trellis.alerts.notify import AlertNotifier
from trellis.alerts.schemas import AlertEventOut
from trellis.alerts.service import AlertService
from trellis.auth.cache import AuthEpoch, FileAuthEpoch, NoAuthEpoch, PostgresAuthEpoch, RedisAuthEpoch
from trellis.auth.schemas import Principal
from trellis.auth.secrets import resolve_jwt_secret
from trellis.auth.service import AuthService
from trellis.auth.watch import AccessWatch
from trellis.context.index.auto import AutoVectorIndex
from trellis.context.index.base import VectorIndex
from trellis.context.index.reindex import Reindexer
from trellis.context.index.service import GatewayIndexer
from trellis.context.index.state import EmbeddingModels
from trellis.context.ingest.service import IngestService
from trellis.context.search.rerank import reranker_from_settings
from trellis.context.search.service import ContextSearch
from trellis.context.service import ContextService
from trellis.dashboard.service import DashboardSessions
from trellis.dspy.programs import ProgramService, program_key
from trellis.dspy.service import DSPyService
from trellis.episodic.schemas import CallRecord
from trellis.episodic.service import EpisodicLogService
from trellis.episodic.writer import EpisodicLogWriter
from trellis.events.base import DASHBOARD, EventBus, MessageType, message, user_topic
from trellis.events.memory import MemoryEventBus
from trellis.events.metrics import LiveMetrics
from trellis.events.redis import RedisEventBus
from trellis.events.runs import RunEventPublisher
from trellis.events.service import LiveEvents
from trellis.gateway.cache import EmbeddingCache, ResponseCache
from trellis.gateway.metrics import GatewayMetrics
from trellis.gateway.providers.base import ProviderContext
from trellis.gateway.providers.registry import ProviderRegistry
from trellis.gateway.resilience import CircuitBreaker, MemoryCircuitBreaker, RedisCircuitBreaker
from trellis.gateway.service import Gateway
from trellis.kit.clock import Clock, SystemClock, utc_timestamp
from trellis.kit.outbound import OutboundClient, OutboundPolicy
from trellis.kit.vector_math import use_one_blas_thread
from trellis.metrics.collector import MetricsCollector
from trellis.metrics.probes import backlog_probe, data_dir_gauge, disk_probe, pool_probe, queue_probe
from trellis.metrics.service import MetricsService, SystemMetricsService
from trellis.metrics.usage import UsageMeter
from trellis.ratelimit.base import RateLimiter
from trellis.ratelimit.memory import MemoryRateLimiter
from trellis.ratelimit.redis import RedisRateLimiter
from trellis.settings import Settings
from trellis.storage.database import Database, asyncpg_dsn
from trellis.vectors.service import VectorCollections
from trellis.workflows.ended import RunEndListener
from trellis.workflows.engine import DefinitionCache, Engine, EventSink
from trellis.workflows.liveness import WorkerLiveness
from trellis.workflows.metrics import WorkflowMetrics
from trellis.workflows.n8n import N8nClient
from trellis.workflows.queue import WorkQueue, build_work_queue
from trellis.workflows.schemas import ExecuteRequest
from trellis.workflows.secrets import build_secret_box
from trellis.workflows.service import WorkflowService
from trellis.workflows.steps.base import StepServices
from trellis.workflows.steps.dspy import DSPyOptimizeStep
from trellis.workflows.steps.registry import StepRegistry
from trellis.workflows.worker import RunWaiters, WorkflowWorker, new_worker_id


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    database: Database
    redis: Redis | None
    limiter: RateLimiter
    auth: AuthService
    logs: EpisodicLogWriter
    episodic: EpisodicLogService
    registry: CollectorRegistry
    gateway: Gateway
    context: ContextService
    ingest: IngestService
    vector_index: VectorIndex
    indexer: GatewayIndexer
    search: ContextSearch
    reindexer: Reindexer
    vectors: VectorCollections
    workflow_parts: WorkflowParts
    bus: EventBus
    run_events: RunEventPublisher
    live: LiveEvents
    access_watch: AccessWatch
    system_metrics: SystemMetricsService
    dspy: DSPyService
    monitoring: Monitoring
    dashboard: DashboardSessions
    dspy_programs: ProgramService

    @property
    def metrics(self) -> MetricsService:
        """The metric history and this process's snapshot (REST, GraphQL, CLI)."""
        return self.monitoring.metrics

    @property
    def alerts(self) -> AlertService:
        return self.monitoring.alerts

    @property
    def live_metrics(self) -> LiveMetrics:
        return self.monitoring.live

    @property
    def workflow_worker(self) -> WorkflowWorker | None:
        """Runs workflow steps in this process: the embedded pool of `trellis serve`, or `trellis worker`."""
        return self.workflow_parts.worker

    @property
    def workflows(self) -> WorkflowService:
        return self.workflow_parts.service

    @property
    def work_queue(self) -> WorkQueue | None:
        return self.workflow_parts.queue

    @property
    def outbound(self) -> OutboundClient:
        return self.workflow_parts.outbound

    def new_workflow_worker(self, worker_id: str | None = None) -> WorkflowWorker:
        """A worker (tests make several to play several processes)."""
        return self.workflow_parts.new_worker(worker_id)

    def own_workflow_worker(self) -> WorkflowWorker:
        """This process's worker, made if it has none (`trellis worker` in a distributed setup)."""
        if self.workflow_parts.worker is None:
            self.workflow_parts.worker = self.workflow_parts.new_worker()
        return self.workflow_parts.worker

    def start(self, *, index_sweep: bool = True, workflow_worker: bool = True, monitoring: bool = True) -> None:
        """Start the background workers (call from a running event loop): the episodic log writer,
        then the context indexer, then the workflow worker's loops. ``index_sweep=False`` (one-shot
        CLI commands) leaves the sweep for contexts without a current vector to the server; what a
        command schedules is still embedded when it closes the runtime. ``workflow_worker=False``
        leaves workflow runs to the server's (or the workers') pool. ``monitoring=False`` (one-shot
        CLI commands) starts neither the metric collector nor the alert evaluator; otherwise
        ``[metrics] collect`` and ``[alerts] evaluate`` decide."""
        self.logs.start()
        self.bus.start()
        if monitoring:
            self.monitoring.start()
        if index_sweep:
            self.indexer.start()
            self.reindexer.start_worker()
        if workflow_worker and self.workflow_worker is not None:
            self.workflow_worker.start()

    async def close(self) -> None:
        """Stop the workers, draining them, then close the backends. Every door ends here: the app's
        lifespan and each CLI command, so no queued log row or scheduled embedding is lost."""
        await self.monitoring.stop()  # a last sample and the roll-ups in progress: needs the database
        if self.workflow_worker is not None:
            await self.workflow_worker.stop()  # finishes or hands back its runs: needs everything below
        if self.work_queue is not None:
            await self.work_queue.close()
        if self.workflow_parts.run_ends is not None:
            await self.workflow_parts.run_ends.aclose()
        await self.run_events.close()  # publishes what the workers' last commits wrote
        await self.bus.close()
        await self.outbound.aclose()
        await self.reindexer.stop()  # mid-batch if need be: what is stored stays, the lease is given back
        await self.indexer.stop()  # embeds what is still queued: needs the gateway, the log and the database
        await self.indexer.models.aclose()
        await self.logs.stop()  # writes every queued log row (the indexer's included): needs the database
        await self.gateway.providers.aclose()
        await self.limiter.close()
        await self.access_watch.aclose()
        await self.auth.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.database.dispose()


def build_redis(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    # redis-py's default pool holds 100 connections and then raises "Too many connections", which the
    # rate limiter takes for Redis being down (and fails open): a burst of 200 requests did that.
    # A blocking pool would queue instead, but stalled the live-events fan-out at 1,000 WebSocket
    # clients (bench/ws_fanout.py), so the pool stays non-blocking, sized by redis_max_connections.
    return Redis.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )


def build_auth_epoch(
    settings: Settings, redis: Redis | None, database: Database, clock: Clock, name: str = "auth"
) -> AuthEpoch:
    """Where processes sharing this database learn that access was taken away (see auth/cache.py),
    or, under another ``name``, that something else they cache changed (``embedding``: the active
    embedding model, see context/index/state.py)."""
    if redis is not None:
        return RedisAuthEpoch(redis, f"{settings.redis_key_prefix}{name}:epoch")
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return FileAuthEpoch(Path(f"{url.database}.{name}-epoch"))
    if url.get_backend_name() == "postgresql" and settings.auth_cache_listen:
        return PostgresAuthEpoch(database, asyncpg_dsn(url), clock, channel=f"trellis_{name}_epoch")
    return NoAuthEpoch()


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    jitter: Callable[[], float] | None = None,
) -> Runtime:
    """``sleep`` and ``jitter`` replace the gateway's backoff wait and random draw (tests)."""
    clock = clock or SystemClock()
    # The data directory holds the database, the JWT secret and the admin key: owner-only.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    jwt_secret = resolve_jwt_secret(settings)
    database = Database(settings.resolved_database_url)
    redis = build_redis(settings)
    limiter: RateLimiter
    if redis is not None:
        limiter = RedisRateLimiter(
            redis,
            prefix=f"{settings.redis_key_prefix}rl:",
            timeout_seconds=settings.redis_timeout_seconds,
            fail_open=settings.rate_limit_fail_open,
        )
    else:
        limiter = MemoryRateLimiter(clock)
    auth = AuthService(database, settings, jwt_secret, clock, build_auth_epoch(settings, redis, database, clock))
    logs = EpisodicLogWriter(database, clock, retention_days=settings.gateway.log_retention_days)
    registry = CollectorRegistry()
    usage = UsageMeter()  # the metric history's usage: every call record the gateway makes
    gateway = build_gateway(settings, clock, redis, logs, registry, sleep=sleep, jitter=jitter, on_call=usage.record)
    logs.on_drop = lambda reason, count: gateway.metrics.log_dropped.labels(reason).inc(count)
    # Semantic search: vectors in the database, searched exactly in-process or by pgvector (chosen on
    # first use); contexts are embedded through the gateway as they are written.
    use_one_blas_thread()  # exact scoring: one BLAS thread per search, not a spinning pool per process
    vector_index = AutoVectorIndex(database, ef_search=settings.context.vector_ef_search)
    # The active embedding model, read on every search and indexing batch: cached under an epoch.
    models = EmbeddingModels(
        database, gateway, epoch=build_auth_epoch(settings, redis, database, clock, "embedding"), clock=clock
    )
    indexer = GatewayIndexer(database, gateway, vector_index, clock, models=models)
    context = ContextService(database, settings, clock, indexer)
    ingest = IngestService(
        database,
        clock,
        indexer,
        max_file_bytes=settings.context.ingest_max_file_bytes,
        chunk_max_chars=settings.context.ingest_chunk_max_chars,
    )
    search = ContextSearch(
        database,
        gateway,
        vector_index,
        keyword_budget=settings.context.keyword_rank_budget,
        rrf_k=settings.context.search_rrf_k,
        keyword_weight=settings.context.search_keyword_weight,
        semantic_weight=settings.context.search_semantic_weight,
        document_decay=settings.context.search_document_decay,
        models=indexer.models,
        reranker=reranker_from_settings(settings.context),
        rerank_depth=settings.context.rerank_depth,
        rerank_fused_weight=settings.context.rerank_fused_weight,
    )
    reindexer = Reindexer(
        database,
        gateway,
        indexer,
        clock,
        batch_size=settings.context.reindex_batch_size,
        lease_seconds=settings.context.reindex_lease_seconds,
    )
    vectors = VectorCollections(database, gateway, clock)
    bus = build_bus(settings, redis)
    run_events = RunEventPublisher(bus)
    dspy = DSPyService(settings, gateway, context, search, limiter)
    dspy_programs = ProgramService(database, clock, dspy, program_key(jwt_secret), settings.dspy)
    workflow_parts = build_workflows(
        settings,
        clock,
        database,
        gateway,
        context,
        search,
        registry,
        on_events=run_events,
        dspy=dspy,
        dspy_programs=dspy_programs,
    )
    dspy_programs.bind_runs(workflow_parts.start_internal_run)
    system_metrics = SystemMetricsService(registry, clock)
    monitoring = build_monitoring(
        settings, clock, database, registry, usage, indexer, bus, workflow_parts, system_metrics
    )
    return Runtime(
        settings,
        clock,
        database,
        redis,
        limiter,
        auth,
        logs,
        EpisodicLogService(database),
        registry,
        gateway,
        context,
        ingest,
        vector_index,
        indexer,
        search,
        reindexer,
        vectors,
        workflow_parts,
        bus,
        run_events,
        # An in-process bus hears runs only where they execute: an API without the workers polls.
        LiveEvents(
            bus,
            workflow_parts.service,
            settings.events,
            clock,
            runs_on_bus=bus.backend != "memory" or workflow_parts.worker is not None,
        ),
        AccessWatch(auth, clock, interval_seconds=settings.ws.credential_check_seconds),
        system_metrics,
        dspy,
        monitoring,
        dashboard=DashboardSessions(database, auth, settings.dashboard, clock),
        dspy_programs=dspy_programs,
    )


@dataclass
class Monitoring:
    """The metric history (collector, queries) and alerts (service, evaluator, notifier) of one process."""

    settings: Settings
    usage: UsageMeter
    live: LiveMetrics
    collector: MetricsCollector
    metrics: MetricsService
    alerts: AlertService
    evaluator: AlertEvaluator

    def start(self) -> None:
        if self.settings.metrics.collect:
            self.collector.start()
        if self.settings.alerts.evaluate:
            self.evaluator.start()

    async def stop(self) -> None:
        await self.evaluator.stop()
        if self.collector.running:
            await self.collector.stop()


def build_monitoring(
    settings: Settings,
    clock: Clock,
    database: Database,
    registry: CollectorRegistry,
    usage: UsageMeter,
    indexer: GatewayIndexer,
    bus: EventBus,
    workflow_parts: WorkflowParts,
    system_metrics: SystemMetricsService,
) -> Monitoring:
    """The collector samples this process (usage from the gateway's call records, gauges from probes)
    and publishes each sample's headline numbers to the dashboard feed; the evaluator publishes alert
    state changes there and to the rule owner's feed."""
    live = LiveMetrics(registry)
    data_dir_gauge(registry, settings.data_dir)

    async def publish_sample(data: dict[str, object]) -> None:
        await bus.publish(DASHBOARD, message("update", "dashboard", "metrics_sample", data, utc_timestamp(clock.now())))

    async def publish_alert(event: AlertEventOut) -> None:
        kind = "alert_notification" if event.notification.status in ("sent", "failed") else "alert_state"
        type_: MessageType = "error" if event.to_state == "firing" and kind == "alert_state" else "update"
        msg = message(type_, "dashboard", kind, event.model_dump(mode="json"), utc_timestamp(clock.now()))
        items: list[tuple[str, dict[str, object], int | None]] = [(DASHBOARD, msg, None)]
        if event.owner_id is not None:
            items.append((user_topic(event.owner_id), msg, None))
        await bus.publish_many(items)

    collector = MetricsCollector(
        database,
        clock,
        settings.metrics,
        registry,
        usage,
        probes=[
            pool_probe(database),
            backlog_probe(lambda: indexer.backlog),
            queue_probe(database, clock),
            disk_probe(settings.data_dir),
        ],
        publish=publish_sample,
    )
    metrics = MetricsService(database, clock, settings.metrics, system_metrics, collector)
    alerts = AlertService(
        database, clock, settings.alerts, metrics, workflow_parts.outbound, build_secret_box(settings)
    )
    notifier = AlertNotifier(
        database, clock, settings.alerts, alerts, workflow_parts.outbound, on_outcome=publish_alert
    )
    evaluator = AlertEvaluator(
        database,
        clock,
        settings.alerts,
        settings.metrics,
        alerts,
        notifier,
        holder=collector.instance,
        publish=publish_alert,
    )
    return Monitoring(settings, usage, live, collector, metrics, alerts, evaluator)


def build_bus(settings: Settings, redis: Redis | None) -> EventBus:
    """The event bus live doors listen to: Redis pub/sub when Redis is configured, else in-process."""
    tuning = settings.events
    if redis is None or settings.redis_url is None:
        return MemoryEventBus(queue_size=tuning.queue_size)
    return RedisEventBus(
        redis,
        settings.redis_url,
        prefix=settings.redis_key_prefix,
        queue_size=tuning.queue_size,
        ping_seconds=tuning.ping_seconds,
        reconnect_seconds=tuning.reconnect_seconds,
        max_reconnect_seconds=tuning.max_reconnect_seconds,
        id_ttl_seconds=tuning.id_ttl_seconds,
        timeout_seconds=settings.redis_timeout_seconds,
    )


@dataclass
class WorkflowParts:
    """What durable workflows are made of in one process (see ``build_workflows``)."""

    settings: Settings
    clock: Clock
    database: Database
    service: WorkflowService
    services: StepServices
    registry: StepRegistry
    definitions: DefinitionCache
    waiters: RunWaiters
    queue: WorkQueue | None
    outbound: OutboundClient
    metrics: WorkflowMetrics
    run_ends: RunEndListener | None = None
    worker: WorkflowWorker | None = None
    on_events: EventSink | None = None
    # PostgreSQL with ``[workflow] liveness``: where a worker holds its liveness lock.
    liveness_dsn: str | None = None

    def new_worker(self, worker_id: str | None = None) -> WorkflowWorker:
        """A worker; with an id of the caller's choosing (tests) it holds no liveness lock."""
        liveness = None
        if worker_id is None and self.liveness_dsn is not None:
            worker_id = new_worker_id(live=True)
            # Retaken at the next poll after a lost connection, before the others judge it dead.
            liveness = WorkerLiveness(
                self.liveness_dsn, worker_id, self.clock, retry_seconds=self.settings.workflow.poll_seconds
            )
        engine = Engine(
            self.database,
            self.clock,
            self.settings.workflow,
            self.registry,
            self.definitions,
            self.services,
            worker_id=worker_id or new_worker_id(),
            nudge=self.nudge,
            metrics=self.metrics,
            on_events=self.on_events,
        )
        return WorkflowWorker(
            engine, self.database, self.clock, self.settings.workflow, self.waiters, liveness=liveness
        )

    async def nudge(self, run_id: str) -> None:
        if self.queue is not None:
            await self.queue.submit(run_id)
        elif self.worker is not None and self.worker.started:
            self.worker.spawn(run_id)
        # else: the poll of whichever process runs workers finds it

    def cancel_local(self, run_id: str) -> bool:
        return self.worker.cancel_local(run_id) if self.worker is not None else False

    async def start_internal_run(self, actor: Principal, definition: dict[str, Any], input: dict[str, Any]) -> str:
        """Queue a run of one of Trellis's own workflows (``dspy.optimize``) as ``actor``: the
        definition is saved under the actor's workflows (a new version only when it changed), then
        run like any other, so its progress, events and history are the workflow API's."""
        name = definition["steps"][0]["type"]
        await self.service.save(actor, name, definition, mode="apply")
        run, _ = await self.service.execute(actor, ExecuteRequest(workflow=name, input=input))
        return run.id


def build_workflows(
    settings: Settings,
    clock: Clock,
    database: Database,
    gateway: Gateway,
    context: ContextService,
    search: ContextSearch,
    registry: CollectorRegistry,
    *,
    worker: bool | None = None,
    on_events: EventSink | None = None,
    dspy: DSPyService | None = None,
    dspy_programs: ProgramService | None = None,
) -> WorkflowParts:
    """The workflow service, and a worker when this process runs steps: by default when there is no
    work queue (embedded); ``[workflow] embedded_workers`` or ``worker`` (`trellis worker`) decide
    otherwise. Without a worker here, runs are nudged through the queue to the worker processes."""
    tuning = settings.workflow
    outbound = OutboundClient(
        OutboundPolicy.from_strings(tuning.outbound_allow),
        timeout_seconds=tuning.outbound_timeout_seconds,
        max_response_bytes=tuning.outbound_max_response_bytes,
    )
    steps = StepRegistry()
    if not steps.knows(DSPyOptimizeStep.name):
        # Installed metadata made before the step's entry point was declared does not list it; the
        # programs service needs it (its optimization runs are workflow runs of this step).
        steps.register(DSPyOptimizeStep.name, DSPyOptimizeStep)
    definitions = DefinitionCache(database, steps)
    waiters = RunWaiters()
    url = make_url(settings.resolved_database_url)
    dsn = asyncpg_dsn(url) if url.get_backend_name() == "postgresql" else None  # connections of their own
    run_ends = None
    if dsn is not None:
        run_ends = RunEndListener(dsn, waiters.notify, clock, wanted=waiters.waiting)
    queue = build_work_queue(tuning.queue_url, name=tuning.queue_name) if tuning.queue_url else None
    wanted = worker if worker is not None else tuning.embedded_workers
    if wanted is None:
        wanted = queue is None
    parts: WorkflowParts

    async def nudge(run_id: str) -> None:
        await parts.nudge(run_id)

    service = WorkflowService(
        database,
        clock,
        tuning,
        steps,
        definitions,
        build_secret_box(settings),
        outbound,
        waiters,
        nudge=nudge,
        cancel_local=lambda run_id: parts.cancel_local(run_id),
        local_worker=lambda: parts.worker,
        run_ends=run_ends,
        on_events=on_events,
    )
    services = StepServices(
        settings=tuning,
        gateway=gateway,
        contexts=context,
        search=search,
        outbound=outbound,
        n8n=N8nClient(
            outbound,
            poll_interval_seconds=tuning.n8n_poll_seconds,
            max_poll_interval_seconds=tuning.n8n_max_poll_seconds,
        ),
        n8n_connection=service.resolve_connection,
        start_child=service.start_child,
        dspy=dspy,
        dspy_programs=dspy_programs,
    )
    parts = WorkflowParts(
        settings,
        clock,
        database,
        service,
        services,
        steps,
        definitions,
        waiters,
        queue,
        outbound,
        WorkflowMetrics(registry),
        run_ends,
        on_events=on_events,
        liveness_dsn=dsn if tuning.liveness else None,
    )
    if wanted:
        parts.worker = parts.new_worker()
    return parts


def build_gateway(
    settings: Settings,
    clock: Clock,
    redis: Redis | None,
    logs: EpisodicLogWriter,
    registry: CollectorRegistry,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    jitter: Callable[[], float] | None = None,
    on_call: Callable[[CallRecord], None] | None = None,
) -> Gateway:
    tuning = settings.gateway
    breaker: CircuitBreaker
    if redis is not None:
        breaker = RedisCircuitBreaker(
            redis,
            prefix=f"{settings.redis_key_prefix}breaker:",
            failure_threshold=tuning.breaker_failure_threshold,
            recovery_seconds=tuning.breaker_recovery_seconds,
            timeout_seconds=settings.redis_timeout_seconds,
        )
    else:
        breaker = MemoryCircuitBreaker(
            clock, failure_threshold=tuning.breaker_failure_threshold, recovery_seconds=tuning.breaker_recovery_seconds
        )
    cache = ResponseCache.from_settings(tuning, clock, redis=redis, redis_prefix=f"{settings.redis_key_prefix}cache:")
    embeddings = EmbeddingCache.from_settings(
        tuning, clock, redis=redis, redis_prefix=f"{settings.redis_key_prefix}embed:"
    )
    providers = ProviderRegistry(ProviderContext(settings))
    return Gateway(
        settings,
        providers,
        breaker,
        cache,
        logs,
        GatewayMetrics(registry),
        clock,
        sleep=sleep,
        jitter=jitter,
        embeddings=embeddings,
        on_call=on_call,
    )
