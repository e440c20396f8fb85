"""``trellis metrics show|series``: the metric history in the terminal, a sparkline per line.

Reads the database through ``MetricsService``, as ``GET /api/v1/db/metrics`` does (same checks:
usage series are the key owner's, system series need an administrator's key).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from trellis.cli.common import ApiKeyOption, JsonOption, acting, console, emit, fail, parse, print_json, run
from trellis.metrics.schemas import MetricLine, MetricQuery, MetricSeriesOut, SeriesInfo, parse_labels, split_names
from trellis.runtime import Runtime

metrics_app = typer.Typer(help="Metric history: series over time, from every replica.", no_args_is_help=True)

BLOCKS = "▁▂▃▄▅▆▇█"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def sparkline(values: list[float | None], width: int = 60) -> str:
    """Values as block characters, scaled between their minimum and maximum (a gap is a space).
    Hand-written: eight glyphs and a scale do not need a plotting library."""
    if len(values) > width:  # fold neighbouring points together (their maximum) to fit
        size = -(-len(values) // width)
        folded: list[float | None] = []
        for i in range(0, len(values), size):
            chunk = [v for v in values[i : i + size] if v is not None]
            folded.append(max(chunk) if chunk else None)
        values = folded
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    low, high = min(present), max(present)
    span = high - low
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif span == 0:
            out.append(BLOCKS[0] if high == 0 else BLOCKS[3])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int((value - low) / span * len(BLOCKS)))])
    return "".join(out)


def moment(text: str | None, now: datetime) -> datetime | None:
    """``1h`` / ``30m`` / ``2d`` ago, or an ISO 8601 time."""
    if text is None:
        return None
    found = _DURATION.match(text.strip())
    if found:
        return now - timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{text!r} is neither a duration (30m, 6h, 7d) nor an ISO 8601 time")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds(text: str | None) -> int | None:
    """Seconds, or a duration such as 1m, 1h."""
    if text is None:
        return None
    found = _DURATION.match(text.strip())
    if found:
        return int(float(found.group(1)) * _UNITS[found.group(2)])
    if not text.isdigit():
        fail(f"{text!r}: give seconds or a duration such as 1m, 1h")
    return int(text)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e12:
        return f"{int(value):,}"
    return f"{value:.4g}"


def render(out: MetricSeriesOut) -> None:
    console.print(
        f"[bold]{out.series}[/bold] ({out.kind}, {out.unit}) {out.fn} · "
        f"{out.since:%Y-%m-%d %H:%M} → {out.until:%Y-%m-%d %H:%M} UTC · step {out.step} s · "
        f"{out.instances} replica(s)",
        highlight=False,
    )
    table = Table("labels", "chart", "current", "total", "min", "max", "p95")
    for line in out.lines:
        table.add_row(*_row(line))
    console.print(table)


def _row(line: MetricLine) -> list[str]:
    labels = ", ".join(f"{k}={v}" for k, v in line.labels.items()) or "(all)"
    s = line.summary
    return [
        labels,
        sparkline([value for _, value in line.points]),
        _number(s.current),
        _number(s.total),
        _number(s.min),
        _number(s.max),
        _number(s.p95),
    ]


@metrics_app.command("show")
def show(
    series: Annotated[str, typer.Argument(help="A series name (see `trellis metrics series`).")],
    since: Annotated[str | None, typer.Option(help="Start: a duration ago (6h, 7d) or an ISO time.")] = "1h",
    until: Annotated[str | None, typer.Option(help="End (default: now).")] = None,
    step: Annotated[str | None, typer.Option(help="Seconds per point, or 1m, 1h (default: automatic).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="name:value (repeatable).")] = None,
    group_by: Annotated[list[str] | None, typer.Option("--by", help="One line per value of this label.")] = None,
    fn: Annotated[str | None, typer.Option(help="increase|rate, last|max|min|avg, p50|p95|p99|avg|count.")] = None,
    user: Annotated[str | None, typer.Option(help="Usage series: whose (administrators).")] = None,
    as_json: JsonOption = False,
    api_key: ApiKeyOption = None,
) -> None:
    """A series over time: one sparkline per line, with its current value and summaries."""

    async def work(runtime: Runtime) -> MetricSeriesOut:
        principal = await acting(runtime, api_key)
        now = runtime.clock.now()
        query = parse(
            MetricQuery,
            series=series,
            labels=parse_labels(label or []),
            group_by=split_names(group_by or []),
            user_id=user,
            since=moment(since, now),
            until=moment(until, now),
            step=seconds(step),
            fn=fn,
        )
        return await runtime.metrics.query(principal, query)

    out = run(work)
    if as_json:
        print_json(out)
    else:
        render(out)


@metrics_app.command("series")
def list_series(as_json: JsonOption = False, api_key: ApiKeyOption = None) -> None:
    """The series you may query."""

    async def work(runtime: Runtime) -> list[SeriesInfo]:
        return runtime.metrics.catalogue(await acting(runtime, api_key))

    emit(run(work), as_json, ["name", "kind", "unit", "scope", "labels", "description"])
