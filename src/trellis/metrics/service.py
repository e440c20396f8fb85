"""A snapshot of this process's own Prometheus registry, as a few summed numbers: what REST
(``GET /api/v1/metrics/system``) and GraphQL (``systemMetrics``) both answer.

The registry is the one the runtime builds and every component records into (HTTP edge, gateway,
workflows); ``/metrics`` serves it raw for Prometheus. Counters here are this process's since it
started: across replicas, sum them in Prometheus, not here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry

from trellis import __version__
from trellis.kit.clock import Clock
from trellis.metrics.schemas import (
    BreakerState,
    HttpTotals,
    ModelTotals,
    SystemMetricsOut,
    WorkflowTotals,
)

Labels = Mapping[str, str]


class _Samples:
    """One collection of the registry, indexed by sample name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._by_name: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
        for family in registry.collect():
            for sample in family.samples:
                self._by_name[sample.name].append((sample.labels, sample.value))

    def total(self, name: str, where: Callable[[Labels], bool] = lambda labels: True) -> int:
        return int(sum(value for labels, value in self._by_name.get(name, ()) if where(labels)))

    def by(self, name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for labels, value in self._by_name.get(name, ()):
            out[labels.get(label, "")] += int(value)
        return dict(sorted(out.items()))

    def rows(self, name: str) -> list[tuple[Labels, float]]:
        return list(self._by_name.get(name, ()))


def _status(labels: Labels) -> int:
    try:
        return int(labels.get("status", "0"))
    except ValueError:
        return 0


class SystemMetricsService:
    def __init__(self, registry: CollectorRegistry, clock: Clock) -> None:
        self._registry = registry
        self._clock = clock
        self._started = clock.monotonic()

    def snapshot(self) -> SystemMetricsOut:
        samples = _Samples(self._registry)
        prompt = samples.total("trellis_gateway_tokens_total", lambda labels: labels.get("kind") == "prompt")
        completion = samples.total("trellis_gateway_tokens_total", lambda labels: labels.get("kind") == "completion")
        cache = samples.by("trellis_gateway_cache_total", "result")
        return SystemMetricsOut(
            timestamp=self._clock.now(),
            version=__version__,
            uptime_seconds=round(max(0.0, self._clock.monotonic() - self._started), 3),
            http=HttpTotals(
                requests=samples.total("trellis_http_requests_total"),
                client_errors=samples.total("trellis_http_requests_total", lambda lb: 400 <= _status(lb) < 500),
                server_errors=samples.total("trellis_http_requests_total", lambda lb: _status(lb) >= 500),
                rate_limited=samples.total("trellis_http_requests_total", lambda lb: _status(lb) == 429),
            ),
            models=ModelTotals(
                calls=samples.total("trellis_gateway_requests_total"),
                errors=samples.total("trellis_gateway_requests_total", lambda lb: lb.get("status") == "error"),
                cancelled=samples.total("trellis_gateway_requests_total", lambda lb: lb.get("status") == "cancelled"),
                prompt_tokens=prompt,
                completion_tokens=completion,
                tokens=prompt + completion,
                cache_hits=cache.get("hit_l1", 0) + cache.get("hit_l2", 0),
                cache_misses=cache.get("miss", 0),
                fallbacks=samples.total("trellis_gateway_fallbacks_total"),
                retries=samples.total("trellis_gateway_retries_total"),
                log_rows_dropped=samples.total("trellis_episodic_log_dropped_total"),
            ),
            breakers=[
                BreakerState(endpoint=labels.get("endpoint", ""), open=value > 0)
                for labels, value in sorted(
                    samples.rows("trellis_gateway_breaker_open"), key=lambda row: row[0].get("endpoint", "")
                )
            ],
            workflows=WorkflowTotals(
                active_runs=samples.total("trellis_workflow_runs_active"),
                runs_ended=samples.by("trellis_workflow_runs_total", "status"),
                steps=samples.total("trellis_workflow_steps_total"),
                runs_lost=samples.total("trellis_workflow_lost_total"),
            ),
        )
