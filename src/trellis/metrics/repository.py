"""Queries of the metric history: series ids, sample writes (merged on conflict), aggregated reads,
retention, and the monitoring leases.

Reads aggregate in SQL: each series id is mapped to its output line by a ``CASE`` and rows are
summed per (line, step), so a day of minute samples from many series and replicas comes back as one
row per point, not one per stored sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, literal_column, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.metrics.models import BUCKET_COLUMNS, MetricHistogram, MetricSample, MetricSeries, MonitorLease

SYSTEM_OWNER = ""


@dataclass(frozen=True, slots=True)
class SeriesRow:
    id: int
    owner_id: str
    labels: str
    instance: str


def _insert(session: AsyncSession, table: Any) -> Any:
    """A dialect insert on the table itself (Core: a sample write skips the ORM's bulk machinery)."""
    dialect = session.get_bind().dialect.name
    target = getattr(table, "__table__", table)
    return postgresql.insert(target) if dialect == "postgresql" else sqlite.insert(target)


# --- series ---------------------------------------------------------------------------------------


async def ensure_series(
    session: AsyncSession, keys: Sequence[tuple[str, str, str]], instance: str, now: datetime
) -> dict[tuple[str, str, str], int]:
    """Ids of ``(name, owner, labels)`` series of ``instance``, created when missing."""
    if not keys:
        return {}
    rows = [{"name": n, "owner_id": o, "labels": lb, "instance": instance, "created_at": now} for n, o, lb in keys]
    stmt = _insert(session, MetricSeries).on_conflict_do_nothing(
        index_elements=["name", "owner_id", "labels", "instance"]
    )
    await session.execute(stmt, rows)
    names = sorted({key[0] for key in keys})
    found = await session.execute(
        select(MetricSeries.id, MetricSeries.name, MetricSeries.owner_id, MetricSeries.labels).where(
            MetricSeries.instance == instance, MetricSeries.name.in_(names)
        )
    )
    wanted = set(keys)
    return {(n, o, lb): i for i, n, o, lb in found.all() if (n, o, lb) in wanted}


async def series_of(session: AsyncSession, name: str, owner_id: str | None) -> list[SeriesRow]:
    """Every replica's series of ``name``; ``owner_id`` None means every owner."""
    query = select(MetricSeries.id, MetricSeries.owner_id, MetricSeries.labels, MetricSeries.instance).where(
        MetricSeries.name == name
    )
    if owner_id is not None:
        query = query.where(MetricSeries.owner_id == owner_id)
    result = await session.execute(query)
    return [SeriesRow(*row) for row in result.all()]


async def label_values(session: AsyncSession, name: str, owner_id: str | None) -> list[str]:
    query = select(MetricSeries.labels).where(MetricSeries.name == name).distinct()
    if owner_id is not None:
        query = query.where(MetricSeries.owner_id == owner_id)
    return list((await session.execute(query)).scalars())


# --- writes ---------------------------------------------------------------------------------------


async def write_samples(session: AsyncSession, counters: list[dict[str, Any]], gauges: list[dict[str, Any]]) -> None:
    """Counter rows add to a row already there (a restarted instance of the same name, a roll-up
    flushed twice); gauge rows replace it."""
    if counters:
        stmt = _insert(session, MetricSample)
        stmt = stmt.on_conflict_do_update(
            index_elements=["series_id", "resolution", "ts"], set_={"value": stmt.table.c.value + stmt.excluded.value}
        )
        await session.execute(stmt, counters)
    if gauges:
        stmt = _insert(session, MetricSample)
        stmt = stmt.on_conflict_do_update(
            index_elements=["series_id", "resolution", "ts"], set_={"value": stmt.excluded.value}
        )
        await session.execute(stmt, gauges)


async def write_histograms(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = _insert(session, MetricHistogram)
    table = stmt.table
    merged: dict[str, Any] = {
        "count": table.c.count + stmt.excluded.count,
        "sum": table.c.sum + stmt.excluded.sum,
    }
    for column in BUCKET_COLUMNS:
        mine = table.c[column]
        theirs = getattr(stmt.excluded, column)
        merged[column] = func.coalesce(mine, 0) + func.coalesce(theirs, 0)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["series_id", "resolution", "ts"], set_=merged), rows
    )


# --- reads ----------------------------------------------------------------------------------------


def _line_case(lines: Mapping[int, int]) -> str:
    """``CASE series_id WHEN 3 THEN 0 ... END`` (ids and line numbers are our integers)."""
    if len(set(lines.values())) == 1:
        return str(next(iter(lines.values())))
    whens = " ".join(f"WHEN {int(series_id)} THEN {int(line)}" for series_id, line in lines.items())
    return f"CASE series_id {whens} END"


def _ids(lines: Mapping[int, int]) -> str:
    return ", ".join(str(int(series_id)) for series_id in lines)


Segments = Sequence[tuple[int, int, int]]


async def counter_sums(
    session: AsyncSession, lines: Mapping[int, int], segments: Segments, step: int
) -> list[tuple[Any, ...]]:
    """(line, step start, sum of values) for the counters ``lines`` maps (series id -> line), one
    row per (segment, line, step) from one statement: each segment (resolution, since, until) is
    summed on its own, so a step that two segments share comes back as two rows (at most two: the
    caller adds them, and two floats add up the same in either order)."""
    if not lines or not segments:
        return []
    # Only our integers are formatted into the statement (ids, line numbers, the step).
    parts = [
        f"SELECT {_line_case(lines)} AS line, (ts / {int(step)}) * {int(step)} AS bucket, SUM(value) "  # noqa: S608
        f"FROM metric_samples WHERE series_id IN ({_ids(lines)}) AND resolution = :r{i} "
        f"AND ts >= :s{i} AND ts < :u{i} GROUP BY 1, 2"
        for i in range(len(segments))
    ]
    params = _segment_params(segments)
    result = await session.execute(text(" UNION ALL ".join(parts)), params)
    return [tuple(row) for row in result.all()]


async def histogram_sums(
    session: AsyncSession, lines: Mapping[int, int], segments: Segments, step: int, buckets: int
) -> list[tuple[Any, ...]]:
    """(line, step start, count, sum, b0..b{buckets-1}) merged per segment, line and step (empty
    buckets 0, not NULL), from one statement; like ``counter_sums``, a step two segments share is
    two rows."""
    if not lines or not segments:
        return []
    columns = ", ".join(f"COALESCE(SUM({column}), 0)" for column in BUCKET_COLUMNS[:buckets])
    parts = [
        f"SELECT {_line_case(lines)} AS line, (ts / {int(step)}) * {int(step)} AS bucket, SUM(count), "  # noqa: S608
        f"SUM(sum), {columns} FROM metric_histograms WHERE series_id IN ({_ids(lines)}) "
        f"AND resolution = :r{i} AND ts >= :s{i} AND ts < :u{i} GROUP BY 1, 2"
        for i in range(len(segments))
    ]
    result = await session.execute(text(" UNION ALL ".join(parts)), _segment_params(segments))
    return [tuple(row) for row in result.all()]


def _segment_params(segments: Segments) -> dict[str, int]:
    params: dict[str, int] = {}
    for i, (resolution, since, until) in enumerate(segments):
        params.update({f"r{i}": resolution, f"s{i}": since, f"u{i}": until})
    return params


async def gauge_rows(
    session: AsyncSession, series_ids: Sequence[int], resolution: int, since: int, until: int
) -> list[tuple[int, int, float]]:
    """(series id, ts, value) in the range, plus each series' last row within ``lookback`` before it."""
    if not series_ids:
        return []
    result = await session.execute(
        select(MetricSample.series_id, MetricSample.ts, MetricSample.value)
        .where(
            MetricSample.series_id.in_(series_ids),
            MetricSample.resolution == resolution,
            MetricSample.ts >= since,
            MetricSample.ts < until,
        )
        .order_by(MetricSample.series_id, MetricSample.ts)
    )
    return [(int(s), int(t), float(v)) for s, t, v in result.all()]


async def gauge_before(
    session: AsyncSession, series_ids: Sequence[int], resolution: int, since: int, lookback: int
) -> list[tuple[int, int, float]]:
    """Each series' last row in ``[since - lookback, since)`` (the value carried into the range)."""
    if not series_ids:
        return []
    latest = (
        select(MetricSample.series_id, func.max(MetricSample.ts).label("ts"))
        .where(
            MetricSample.series_id.in_(series_ids),
            MetricSample.resolution == resolution,
            MetricSample.ts >= since - lookback,
            MetricSample.ts < since,
        )
        .group_by(MetricSample.series_id)
        .subquery()
    )
    result = await session.execute(
        select(MetricSample.series_id, MetricSample.ts, MetricSample.value).join(
            latest,
            (MetricSample.series_id == latest.c.series_id)
            & (MetricSample.ts == latest.c.ts)
            & (MetricSample.resolution == resolution),
        )
    )
    return [(int(s), int(t), float(v)) for s, t, v in result.all()]


async def latest_ts(session: AsyncSession, series_ids: Sequence[int], resolution: int, histogram: bool) -> int | None:
    """The newest sample of these series at this resolution (absence checks)."""
    if not series_ids:
        return None
    table: Any = MetricHistogram if histogram else MetricSample
    result = await session.execute(
        select(func.max(table.ts)).where(table.series_id.in_(series_ids), table.resolution == resolution)
    )
    value = result.scalar()
    return None if value is None else int(value)


async def latest_ts_by_series(
    session: AsyncSession, series_ids: Sequence[int], resolution: int, histogram: bool
) -> dict[int, int]:
    """The newest sample of each of these series at this resolution (per-label-set absence checks)."""
    if not series_ids:
        return {}
    table: Any = MetricHistogram if histogram else MetricSample
    result = await session.execute(
        select(table.series_id, func.max(table.ts))
        .where(table.series_id.in_(series_ids), table.resolution == resolution)
        .group_by(table.series_id)
    )
    return {int(series_id): int(ts) for series_id, ts in result.all() if ts is not None}


# --- retention ------------------------------------------------------------------------------------


async def all_series_ids(session: AsyncSession) -> list[int]:
    return list((await session.execute(select(MetricSeries.id))).scalars())


async def delete_before(session: AsyncSession, series_ids: Iterable[int], resolution: int, cut: int) -> int:
    """Delete rows older than ``cut`` at ``resolution``: one ranged delete per series, through the key."""
    params = [{"series_id": series_id, "resolution": resolution, "cut": cut} for series_id in series_ids]
    if not params:
        return 0
    removed = 0
    for table in ("metric_samples", "metric_histograms"):
        result = await session.execute(
            text(f"DELETE FROM {table} WHERE series_id = :series_id AND resolution = :resolution AND ts < :cut"),  # noqa: S608
            params,
        )
        removed += max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
    return removed


async def delete_empty_series(session: AsyncSession, created_before: datetime) -> int:
    """Series with no rows left (their replica went away long ago)."""
    result = await session.execute(
        delete(MetricSeries).where(
            MetricSeries.created_at < created_before,
            ~select(literal_column("1"))
            .select_from(MetricSample)
            .where(MetricSample.series_id == MetricSeries.id)
            .exists(),
            ~select(literal_column("1"))
            .select_from(MetricHistogram)
            .where(MetricHistogram.series_id == MetricSeries.id)
            .exists(),
        )
    )
    return max(result.rowcount or 0, 0)  # type: ignore[attr-defined]


# --- leases ---------------------------------------------------------------------------------------


async def acquire_lease(session: AsyncSession, name: str, holder: str, now: datetime, ttl_seconds: float) -> int | None:
    """Take or renew the lease ``name`` for ``holder``: its epoch, or None while another holds it.
    A new holder bumps the epoch; the holder renewing keeps it."""
    expires = now + timedelta(seconds=ttl_seconds)
    result = await session.execute(
        update(MonitorLease)
        .where(MonitorLease.name == name, (MonitorLease.holder == holder) | (MonitorLease.expires_at < now))
        .values(
            expires_at=expires,
            epoch=case((MonitorLease.holder == holder, MonitorLease.epoch), else_=MonitorLease.epoch + 1),
            holder=holder,
        )
        .returning(MonitorLease.epoch)
    )
    epoch = result.scalar()
    if epoch is not None:
        return int(epoch)
    inserted = await session.execute(
        _insert(session, MonitorLease)
        .values(name=name, holder=holder, epoch=1, expires_at=expires)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(MonitorLease.epoch)
    )
    first = inserted.scalar()
    return None if first is None else int(first)


async def hold_lease(
    session: AsyncSession, name: str, holder: str, epoch: int, now: datetime, ttl_seconds: float
) -> bool:
    """Renew the lease if ``holder`` still holds it at ``epoch`` (the fence of the holder's writes)."""
    result = await session.execute(
        update(MonitorLease)
        .where(MonitorLease.name == name, MonitorLease.holder == holder, MonitorLease.epoch == epoch)
        .values(expires_at=now + timedelta(seconds=ttl_seconds))
    )
    return (result.rowcount or 0) > 0  # type: ignore[attr-defined]


async def release_lease(session: AsyncSession, name: str, holder: str, now: datetime) -> None:
    await session.execute(
        update(MonitorLease).where(MonitorLease.name == name, MonitorLease.holder == holder).values(expires_at=now)
    )


async def lease_holder(session: AsyncSession, name: str, now: datetime) -> str | None:
    result = await session.execute(
        select(MonitorLease.holder).where(MonitorLease.name == name, MonitorLease.expires_at >= now)
    )
    return result.scalar()
