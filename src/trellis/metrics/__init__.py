"""Prometheus metrics: a registry per app instance, exposed at ``/metrics``, and summed into a snapshot
(``SystemMetricsService``) at ``/api/v1/metrics/system`` and GraphQL's ``systemMetrics``."""
