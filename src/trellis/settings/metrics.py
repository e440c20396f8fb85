"""``[metrics]``: the collector that samples this process's own metrics into the database, and how
long each resolution of that history is kept."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    """Metric history (``[metrics]`` in trellis.toml, ``TRELLIS_METRICS__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Sample this process's metrics into the database (`trellis serve` and `trellis worker`; one-shot
    # CLI commands never do). Each replica writes its own samples; queries sum them.
    collect: bool = True
    # Seconds between samples: the raw resolution. Every stored row covers one interval.
    interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 10
    # This process's name in the history (a replica). Default: host name, process id and a random
    # suffix, so a restarted process never adds to the rows of the one before it.
    instance: Annotated[str | None, Field(min_length=1, max_length=100)] = None
    # How long each resolution is kept: raw samples, 1-minute roll-ups, 1-hour roll-ups.
    raw_retention_hours: Annotated[int, Field(ge=1, le=24 * 31)] = 36
    minute_retention_days: Annotated[int, Field(ge=1, le=366)] = 14
    hour_retention_days: Annotated[int, Field(ge=1, le=3660)] = 90
    # A gauge gets a row when it changes, and at least this often while it does not (so an
    # unchanged value is told apart from a replica that went away).
    gauge_heartbeat_seconds: Annotated[int, Field(ge=10, le=3600)] = 300
    # Retention runs this often, by one replica at a time (a lease in the database).
    maintenance_seconds: Annotated[int, Field(ge=10, le=86_400)] = 600
    lease_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    # GET /api/v1/db/metrics: at most this many points per line (a smaller step is a 400).
    max_points: Annotated[int, Field(ge=10, le=100_000)] = 1_500
    # Publish each sample's headline numbers on the `dashboard` live feed.
    publish_summaries: bool = True
