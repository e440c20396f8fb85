"""Trellis: a self-hosted AI development ecosystem server."""

__version__ = "0.1.0"
