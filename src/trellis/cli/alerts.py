"""``trellis alerts list|rules|history|silence|unsilence``: alerts from the command line, through
``AlertService`` (the same rules as ``/api/v1/alerts``: your rules; an administrator's key sees all)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from trellis.alerts.schemas import AlertEventOut, AlertOut, AlertRuleOut, EventFilters, SilenceCreate, SilenceOut
from trellis.cli.common import ApiKeyOption, JsonOption, acting, console, emit, fail, parse, print_json, run
from trellis.cli.metrics import seconds
from trellis.runtime import Runtime

alerts_app = typer.Typer(help="Alerts: what fires now, the rules, their history, silences.", no_args_is_help=True)

RULE_COLUMNS = ["id", "name", "series", "group_by", "state", "severity", "enabled", "value", "silenced_until"]


def show_labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in labels.items()) or "(all)"


@alerts_app.command("list")
def list_alerts(as_json: JsonOption = False, api_key: ApiKeyOption = None) -> None:
    """Alerts pending or firing now: one line per label set (a rule may fire for several)."""

    async def work(runtime: Runtime) -> list[AlertOut]:
        return await runtime.alerts.alerts_now(await acting(runtime, api_key))

    rows = run(work)
    if as_json:
        emit(rows, True, [])
        return
    if not rows:
        console.print("Nothing pending or firing.")
        return
    table = Table("rule_id", "rule", "labels", "state", "severity", "value", "since", "silenced_until")
    for alert in rows:
        table.add_row(
            alert.rule_id,
            alert.rule_name,
            show_labels(alert.labels),
            alert.state,
            alert.severity,
            "" if alert.value is None else f"{alert.value:g}",
            f"{alert.state_since:%Y-%m-%d %H:%M:%S}",
            "" if alert.silenced_until is None else f"{alert.silenced_until:%Y-%m-%d %H:%M:%S}",
        )
    console.print(table)


@alerts_app.command("rules")
def rules(as_json: JsonOption = False, api_key: ApiKeyOption = None) -> None:
    """Alert rules with their state (built-in ones for administrators)."""

    async def work(runtime: Runtime) -> list[AlertRuleOut]:
        return await runtime.alerts.list_rules(await acting(runtime, api_key))

    emit(run(work), as_json, RULE_COLUMNS)


@alerts_app.command("history")
def history(
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule's changes.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    as_json: JsonOption = False,
    api_key: ApiKeyOption = None,
) -> None:
    """State changes, newest first, with each notification's outcome."""

    async def work(runtime: Runtime) -> list[AlertEventOut]:
        items, _ = await runtime.alerts.events(await acting(runtime, api_key), EventFilters(rule_id=rule, limit=limit))
        return items

    items = run(work)
    if as_json:
        emit(items, True, [])
        return
    for event in items:
        note = event.notification
        console.print(
            f"{event.at:%Y-%m-%d %H:%M:%S} [bold]{event.rule_name}[/bold] {{{show_labels(event.labels)}}} "
            f"{event.from_state} → {event.to_state} "
            f"({event.severity}) {event.message} · notification {note.status}"
            + (f" after {note.attempts} attempt(s): {note.last_error}" if note.last_error else ""),
            highlight=False,
        )


@alerts_app.command("silence")
def silence(
    rule: Annotated[str, typer.Argument(help="The rule's id.")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")] = "1h",
    match: Annotated[
        list[str] | None,
        typer.Option("--match", help="Only the label sets with LABEL=VALUE (repeatable; default: all of them)."),
    ] = None,
    comment: Annotated[str | None, typer.Option(help="Why.")] = None,
    as_json: JsonOption = False,
    api_key: ApiKeyOption = None,
) -> None:
    """Silence a rule (or some of its label sets) for a while: states still change, notifications
    are held back."""
    matchers: dict[str, str] = {}
    for item in match or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--match takes LABEL=VALUE, not {item!r}")
        matchers[name] = value

    async def work(runtime: Runtime) -> SilenceOut:
        body = parse(
            SilenceCreate, rule_id=rule, matchers=matchers, duration_seconds=seconds(duration), comment=comment
        )
        return await runtime.alerts.silence(await acting(runtime, api_key), body)

    out = run(work)
    if as_json:
        print_json(out)
    else:
        which = f" where {show_labels(out.matchers)}" if out.matchers else ""
        console.print(
            f"Silenced {out.rule_id}{which} until {out.ends_at:%Y-%m-%d %H:%M:%S} UTC ({out.id}).", highlight=False
        )


@alerts_app.command("unsilence")
def unsilence(
    silence_id: Annotated[str, typer.Argument(help="The silence's id.")],
    api_key: ApiKeyOption = None,
) -> None:
    """End a silence now."""

    async def work(runtime: Runtime) -> SilenceOut:
        return await runtime.alerts.end_silence(await acting(runtime, api_key), silence_id)

    out = run(work)
    console.print(f"Silence {out.id} ended.", highlight=False)
