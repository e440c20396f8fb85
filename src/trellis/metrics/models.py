"""Metric history tables: an integer id per series, and compact sample rows per resolution.

A *series* is a metric name, its canonical labels, its owner (a user's usage, or ``""`` for the
system's) and the instance (replica) that wrote it. Samples reference it by an integer id and are
keyed ``(series_id, resolution, ts)``: on SQLite they are ``WITHOUT ROWID`` tables, so the key is
the row and there is no second copy of it. Counters store per-interval increases (so replicas add
up); histograms store per-interval counts in fixed buckets (``b0``..``b15``, NULL when empty), so
percentiles are computed from merged buckets, never averaged.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from trellis.storage.base import Base, UTCDateTime

# Histograms keep at most this many buckets (the last one is +Inf).
MAX_BUCKETS = 16
BUCKET_COLUMNS = tuple(f"b{i}" for i in range(MAX_BUCKETS))


class MetricSeries(Base):
    __tablename__ = "metric_series"
    __table_args__ = (Index("uq_metric_series_key", "name", "owner_id", "labels", "instance", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    # "" for system series; the user whose usage this is otherwise.
    owner_id: Mapped[str] = mapped_column(String(40))
    # Canonical labels: JSON with sorted keys and no spaces ("{}" when none).
    labels: Mapped[str] = mapped_column(String(512))
    instance: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MetricSample(Base):
    """A counter's increase, or a gauge's value, over ``[ts, ts + resolution)``."""

    __tablename__ = "metric_samples"
    __table_args__ = ({"sqlite_with_rowid": False},)

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    resolution: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    value: Mapped[float] = mapped_column(Float)


class MetricHistogram(Base):
    """Observations over ``[ts, ts + resolution)``: their count, sum and count per bucket."""

    __tablename__ = "metric_histograms"
    __table_args__ = ({"sqlite_with_rowid": False},)

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    resolution: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)
    sum: Mapped[float] = mapped_column(Float)
    b0: Mapped[int | None] = mapped_column(Integer)
    b1: Mapped[int | None] = mapped_column(Integer)
    b2: Mapped[int | None] = mapped_column(Integer)
    b3: Mapped[int | None] = mapped_column(Integer)
    b4: Mapped[int | None] = mapped_column(Integer)
    b5: Mapped[int | None] = mapped_column(Integer)
    b6: Mapped[int | None] = mapped_column(Integer)
    b7: Mapped[int | None] = mapped_column(Integer)
    b8: Mapped[int | None] = mapped_column(Integer)
    b9: Mapped[int | None] = mapped_column(Integer)
    b10: Mapped[int | None] = mapped_column(Integer)
    b11: Mapped[int | None] = mapped_column(Integer)
    b12: Mapped[int | None] = mapped_column(Integer)
    b13: Mapped[int | None] = mapped_column(Integer)
    b14: Mapped[int | None] = mapped_column(Integer)
    b15: Mapped[int | None] = mapped_column(Integer)


class MonitorLease(Base):
    """Work one replica does at a time (metric retention, alert evaluation): whoever holds the
    unexpired lease; ``epoch`` grows with each new holder, so a former holder's writes can be fenced."""

    __tablename__ = "monitor_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    epoch: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
