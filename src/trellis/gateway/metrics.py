"""Prometheus metrics of the model gateway."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TOKEN_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "trellis_gateway_requests_total",
            "Model calls by served model, provider, door and status.",
            ["model", "provider", "door", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            "trellis_gateway_tokens_total",
            "Tokens by model and kind (prompt or completion).",
            ["model", "kind"],
            registry=registry,
        )
        self.latency = Histogram(
            "trellis_gateway_latency_seconds",
            "Whole model call latency.",
            ["model", "provider"],
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "trellis_gateway_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ["model", "provider"],
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "trellis_gateway_overhead_seconds",
            "Time spent in the gateway itself (call latency minus provider time).",
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.cache = Counter(
            "trellis_gateway_cache_total",
            "Cache lookups by result (hit_l1, hit_l2, miss, bypass).",
            ["result"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "trellis_gateway_fallbacks_total",
            "Calls served by a fallback model.",
            ["requested", "served"],
            registry=registry,
        )
        self.retries = Counter(
            "trellis_gateway_retries_total",
            "Retried provider calls.",
            ["provider"],
            registry=registry,
        )
        self.structured_invalid = Counter(
            "trellis_gateway_structured_invalid_total",
            "Structured answers (JSON, function calls) that failed validation, by served model.",
            ["model"],
            registry=registry,
        )
        self.log_dropped = Counter(
            "trellis_episodic_log_dropped_total",
            "Episodic log rows dropped, by reason.",
            ["reason"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "trellis_gateway_breaker_open",
            "1 when a provider endpoint's breaker is open or half-open.",
            ["endpoint"],
            registry=registry,
        )
