"""The series the collector records: names, kinds, units, labels, who may read them.

Names are Trellis's own (``http.requests``), not Prometheus's, and labels are bounded: a route
*class* (not the route), a status, a model, a user (for usage series, as the series' owner). Each
is filled from this process's Prometheus registry or, for usage, from the gateway's call records
(``collector.py``).

``across`` says how a gauge of several replicas is combined: ``sum`` for per-process quantities
(connections, pool in use), ``max``/``min`` for things every replica sees the same (a breaker, the
queue, the free disk space of a shared data directory). Counters and histograms always add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trellis.gateway.metrics import TOKEN_LATENCY_BUCKETS
from trellis.kit.http_metrics import LATENCY_BUCKETS

Kind = Literal["counter", "gauge", "histogram"]
Scope = Literal["system", "usage"]
Across = Literal["sum", "max", "min"]

COUNTER_FNS = ("increase", "rate")
GAUGE_FNS = ("last", "max", "min", "avg")
HISTOGRAM_FNS = ("p50", "p90", "p95", "p99", "avg", "count", "rate")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True, slots=True)
class SeriesDef:
    name: str
    kind: Kind
    unit: str
    description: str
    labels: tuple[str, ...] = ()
    scope: Scope = "system"
    across: Across = "sum"
    # Histograms: the finite upper bounds; one more bucket (+Inf) follows.
    buckets: tuple[float, ...] = ()

    @property
    def fns(self) -> tuple[str, ...]:
        return {"counter": COUNTER_FNS, "gauge": GAUGE_FNS, "histogram": HISTOGRAM_FNS}[self.kind]

    @property
    def default_fn(self) -> str:
        return {"counter": "increase", "gauge": "last", "histogram": "p95"}[self.kind]


ROUTE_CLASSES = ("ai", "context", "workflow", "db", "alerts", "auth", "graphql", "ws", "dashboard", "ops", "other")

SERIES: tuple[SeriesDef, ...] = (
    SeriesDef(
        "http.requests",
        "counter",
        "requests",
        "HTTP requests answered, by route class, status class (2xx..5xx) and status.",
        ("route_class", "status_class", "status"),
    ),
    SeriesDef(
        "http.latency",
        "histogram",
        "seconds",
        "HTTP request latency by route class.",
        ("route_class",),
        buckets=tuple(float(b) for b in LATENCY_BUCKETS),
    ),
    SeriesDef(
        "ratelimit.denials", "counter", "requests", "Requests refused by the rate limiter (429).", ("route_class",)
    ),
    SeriesDef("model.calls", "counter", "calls", "Model calls by served model and status.", ("model", "status")),
    SeriesDef(
        "model.latency",
        "histogram",
        "seconds",
        "Whole model call latency by served model.",
        ("model",),
        buckets=tuple(float(b) for b in TOKEN_LATENCY_BUCKETS),
    ),
    SeriesDef("model.fallbacks", "counter", "calls", "Calls served by a fallback model.", ("requested", "served")),
    SeriesDef("model.retries", "counter", "calls", "Provider calls retried.", ("provider",)),
    SeriesDef("cache.lookups", "counter", "lookups", "Response and embedding cache lookups by result.", ("result",)),
    SeriesDef(
        "breaker.open",
        "gauge",
        "boolean",
        "1 while a provider endpoint's circuit breaker is open or half-open.",
        ("endpoint",),
        across="max",
    ),
    SeriesDef("log.dropped", "counter", "rows", "Episodic log rows that could not be written.", ("reason",)),
    SeriesDef("index.backlog", "gauge", "contexts", "Contexts waiting to be embedded."),
    SeriesDef("db.pool", "gauge", "connections", "Database connections by state (in_use, idle).", ("state",)),
    SeriesDef("workflow.runs", "counter", "runs", "Runs that ended (or parked), by status.", ("status",)),
    SeriesDef("workflow.active", "gauge", "runs", "Runs being executed now."),
    SeriesDef("workflow.queue_depth", "gauge", "runs", "Runs queued and waiting for a worker.", across="max"),
    SeriesDef("ws.connections", "gauge", "connections", "Open WebSocket connections."),
    SeriesDef("disk.free_bytes", "gauge", "bytes", "Free space of the data directory's file system.", across="min"),
    SeriesDef("disk.free_ratio", "gauge", "ratio", "Free fraction of the data directory's file system.", across="min"),
    SeriesDef("collector.skipped", "counter", "intervals", "Sampling intervals the collector skipped (behind)."),
    SeriesDef(
        "usage.calls", "counter", "calls", "A user's model calls by model and status.", ("model", "status"), "usage"
    ),
    SeriesDef("usage.tokens", "counter", "tokens", "A user's tokens by model and kind.", ("model", "kind"), "usage"),
    SeriesDef("usage.cost", "counter", "usd", "A user's model cost by model.", ("model",), "usage"),
)

BY_NAME: dict[str, SeriesDef] = {series.name: series for series in SERIES}

# The labels of a counter's or histogram's *total* series: the sum over its label sets, written by
# each collector beside them, so a query without label filters or grouping reads one series per
# replica instead of every label set's ("*" is no label name a query can ask for).
TOTAL_LABELS = '{"*":"total"}'


def route_class(route: str) -> str:
    """The class of a route template (the HTTP metrics' ``route`` label)."""
    for prefix, name in _ROUTE_PREFIXES:
        if route.startswith(prefix):
            return name
    return "other"


_ROUTE_PREFIXES = (
    ("/api/v1/ai", "ai"),
    ("/v1/", "ai"),
    ("/api/context", "context"),
    ("/api/v1/workflow", "workflow"),
    ("/api/v1/n8n", "workflow"),
    ("/api/v1/db/metrics", "ops"),  # monitoring reading itself: not the data routes' traffic
    ("/api/v1/db", "db"),
    ("/api/v1/alerts", "alerts"),
    ("/api/v1/auth", "auth"),
    ("/graphql", "graphql"),
    ("/ws", "ws"),
    ("/api/v1/ws", "ws"),
    ("/dashboard", "dashboard"),
    ("/metrics", "ops"),
    ("/api/v1/metrics", "ops"),
    ("/health", "ops"),
    ("/ready", "ops"),
)
