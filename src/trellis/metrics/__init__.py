"""Prometheus metrics: a registry per app instance, exposed at ``/metrics``."""
