"""Prometheus metrics of the live doors: open WebSocket connections (the ``/ws`` door counts them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ws_connections = Gauge("trellis_ws_connections", "Open WebSocket connections on /ws.", registry=registry)
