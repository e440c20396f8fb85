"""``trellis workflow``: durable workflows from the command line.

Definitions: ``apply`` (create or new version from a YAML/JSON file), ``list``, ``show``, ``delete``.
Runs: ``run`` (queue; ``--follow`` shows live progress, ``--wait`` waits quietly), ``status``,
``history``, ``cancel``, ``retry``, ``events``.

Like the other management commands these call ``WorkflowService`` in-process against the configured
database, acting as the owner of an API key, so the REST door's rules apply unchanged; ``--json``
prints what the API's ``data`` holds. A one-shot command runs no workflow steps itself (a server's
or the workers' pool does) except while it waits for a run (``run --follow/--wait``, ``retry
--follow``, ``events --follow``): then, on an embedded setup (no ``[workflow] queue_url``), it runs
this process's worker too, so a run progresses even when no server is running on the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import yaml
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Column, Table
from rich.text import Text

from trellis.auth.schemas import Principal
from trellis.cli.common import (
    ApiKeyOption,
    JsonOption,
    acting,
    answer_stream,
    console,
    err_console,
    fail,
    parse,
    print_json,
    run,
    settings,
)
from trellis.kit.errors import ValidationFailed
from trellis.runtime import Runtime
from trellis.workflows.definition import NAME_PATTERN, load_text
from trellis.workflows.schemas import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EventOut,
    EventPage,
    ExecuteOut,
    ExecuteRequest,
    RunDetail,
    RunOut,
    RunPage,
    StepOut,
    WorkflowDeleted,
    WorkflowOut,
    WorkflowPage,
    WorkflowSaved,
    WorkflowSummary,
)
from trellis.workflows.service import HistoryFilters

T = TypeVar("T")

ENDED = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 0.25
EVENTS_PAGE = 500
DATA_PREVIEW_CHARS = 160

workflow_app = typer.Typer(
    help="""Durable workflows: apply definitions (YAML or JSON), run them, follow their progress,
    and inspect, cancel or retry runs.

    Try the examples:

        trellis workflow apply examples/workflows/hello.yaml

        trellis workflow run hello -i name=Ada --follow

    The workflow language is described in the docstring of `trellis/workflows/definition.py`.
    """,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


class StatusChoice(StrEnum):
    """A run's status, as ``--status`` takes it (the values of ``RunStatus``)."""

    queued = "queued"
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


RunIdArgument = Annotated[str, typer.Argument(help="The run's id (run_…), as `run` or `history` print it.")]


# -- shared helpers ------------------------------------------------------------------------------------


def _runs_here() -> bool:
    """Whether a command that waits for a run should run workflow steps in this process: on an
    embedded setup (no work queue) nothing else may be running them."""
    return settings().workflow.queue_url is None


@dataclass
class _Invalid:
    error: ValidationFailed


def _run_checked(
    work: Callable[[Runtime], Awaitable[T]], *, workflow_worker: bool = False, source: str | None = None
) -> T:
    """``run(work)``, but a 400 (a definition or an input that does not pass) is printed field by
    field rather than as one line of JSON. ``source``: the file a definition came from."""

    async def guarded(runtime: Runtime) -> T | _Invalid:
        try:
            return await work(runtime)
        except ValidationFailed as exc:
            return _Invalid(exc)

    out = run(guarded, workflow_worker=workflow_worker)
    if isinstance(out, _Invalid):
        _fail_fields(out.error, source)
    return out


def _fail_fields(exc: ValidationFailed, source: str | None) -> NoReturn:
    fields: list[dict[str, Any]] = list(exc.details.get("fields") or [])
    if source is not None and len(fields) == 1 and fields[0].get("field") == "definition":
        # The file as a whole: it does not parse, or is not a mapping.
        err_console.print(f"[red]Error:[/red] {escape(source)}: {escape(str(fields[0]['message']))}")
        raise typer.Exit(1)
    if source is not None and fields:
        count = f"{len(fields)} problems" if len(fields) > 1 else "1 problem"
        err_console.print(f"[red]Error:[/red] {escape(source)} is not a valid workflow definition ({count}):")
    else:
        err_console.print(f"[red]Error:[/red] {escape(exc.message)}", highlight=False)
        if len(fields) == 1 and str(fields[0].get("message")) in exc.message:
            raise typer.Exit(1)  # the one line said it all
    for entry in fields:
        where = _field_name(str(entry.get("field") or ""))
        err_console.print(f"  • [bold]{escape(where)}[/bold]: {escape(str(entry.get('message')))}", highlight=False)
    raise typer.Exit(1)


def _field_name(field: str) -> str:
    """``definition.steps.0.type`` → ``steps.0.type``: in a file, the definition is the whole file."""
    if field == "definition":
        return "(the file)"
    return field.removeprefix("definition.") or "(the request)"


def _read_text(file: str, what: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {what} {file}: {exc}")


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = max(((end or datetime.now(UTC)) - start).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{rest:02d}s" if hours else f"{minutes}m{rest:02d}s"


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def _compact(value: Any, limit: int = DATA_PREVIEW_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- definitions ---------------------------------------------------------------------------------------


@workflow_app.command("apply")
def workflow_apply(
    file: Annotated[str, typer.Argument(help="A definition in YAML or JSON ('-': stdin, then --name is required).")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="The workflow's name (default: the file's name without suffix).")
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a workflow from a file, or save the file as its next version.

    A file equal to the latest version makes no new version. A definition that does not pass the
    checks (an unknown step type or field, a reference to a step that does not run before, a cycle,
    a bad template, ...) is refused with each problem listed, and nothing is saved.

        trellis workflow apply examples/workflows/hello.yaml

        trellis workflow apply pipeline.json --name nightly-report
    """
    if name is None:
        if file == "-":
            fail("reading the definition from stdin: give the workflow's name with --name")
        name = Path(file).stem
    if not re.match(NAME_PATTERN, name):
        fail(
            f"{name!r} is not a workflow name: letters, digits, _ . - (at most 128), starting with a letter or "
            "digit" + ("" if file == "-" or name != Path(file).stem else "; pass one with --name")
        )
    text = _read_text(file, "the definition")
    workflow_name = name

    async def work(runtime: Runtime) -> WorkflowSaved:
        raw = load_text(text)
        if not isinstance(raw, dict):
            raise ValidationFailed.of(
                "definition", "the file must hold a mapping with at least `steps` (see examples/workflows/)"
            )
        actor = await acting(runtime, api_key)
        row, version, definition, changed = await runtime.workflows.save(actor, workflow_name, raw, mode="apply")
        return WorkflowSaved(**WorkflowOut.of(row, version, definition).model_dump(), changed=changed)

    saved = _run_checked(work, source="stdin" if file == "-" else file)
    if as_json:
        print_json(saved)
        return
    if not saved.changed:
        console.print(
            f"Workflow [bold]{saved.name}[/bold] unchanged: version {saved.version} is the same.", highlight=False
        )
    elif saved.version == 1:
        console.print(f"Created workflow [bold]{saved.name}[/bold] (version 1).", highlight=False)
    else:
        console.print(
            f"Updated workflow [bold]{saved.name}[/bold]: version {saved.version} (was {saved.version - 1}).",
            highlight=False,
        )
    if saved.changed:
        err_console.print(f"[dim]run it: trellis workflow run {saved.name} --follow[/dim]", highlight=False)


@workflow_app.command("list")
def workflow_list(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_PAGE, help="Page size.")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor a previous page printed.")] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List your workflows by name, with their latest version.

    trellis workflow list
    """

    async def work(runtime: Runtime) -> WorkflowPage:
        actor = await acting(runtime, api_key)
        rows, next_cursor = await runtime.workflows.list_workflows(actor, limit=limit, cursor=cursor)
        items = [
            WorkflowSummary(
                id=row.id, name=row.name, latest_version=row.latest_version, description=desc, updated_at=row.updated_at
            )
            for row, desc in rows
        ]
        return WorkflowPage(items=items, next_cursor=next_cursor)

    page = run(work)
    if as_json:
        print_json(page)
        return
    if not page.items:
        err_console.print("No workflows yet: `trellis workflow apply FILE` creates one.")
        return
    table = Table("name", "version", "updated", "description")
    for item in page.items:
        table.add_row(item.name, str(item.latest_version), _when(item.updated_at), _compact(item.description or "", 60))
    console.print(table)
    if page.next_cursor:
        err_console.print(f"[dim]more: --cursor {page.next_cursor}[/dim]", highlight=False)


@workflow_app.command("show")
def workflow_show(
    name: Annotated[str, typer.Argument(help="The workflow's name.")],
    version: Annotated[int | None, typer.Option("--version", "-v", min=1, help="A version (default: latest).")] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a workflow's definition (as YAML), latest or a given version.

    trellis workflow show hello

    trellis workflow show hello --version 1 --json
    """

    async def work(runtime: Runtime) -> WorkflowOut:
        actor = await acting(runtime, api_key)
        row, chosen, definition = await runtime.workflows.get(actor, name, version)
        return WorkflowOut.of(row, chosen, definition)

    out = run(work)
    if as_json:
        print_json(out)
        return
    console.print(
        f"[bold]{out.name}[/bold]  version {out.version} of {out.latest_version}  updated {_when(out.updated_at)}",
        highlight=False,
    )
    sys.stdout.flush()
    sys.stdout.write(yaml.safe_dump(out.definition, sort_keys=False, allow_unicode=True, width=100))


@workflow_app.command("delete")
def workflow_delete(
    name: Annotated[str, typer.Argument(help="The workflow's name.")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a workflow. Runs already started keep their version; the name can be used again.

    trellis workflow delete hello
    """

    async def work(runtime: Runtime) -> WorkflowDeleted:
        actor = await acting(runtime, api_key)
        await runtime.workflows.delete(actor, name)
        return WorkflowDeleted(name=name)

    out = run(work)
    if as_json:
        print_json(out)
    else:
        console.print(f"Deleted workflow [bold]{out.name}[/bold].", highlight=False)


# -- following a run -----------------------------------------------------------------------------------

_STEP_MARKS = {
    "pending": ("○", "dim"),
    "running": ("●", "yellow"),
    "waiting": ("⏸", "cyan"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("-", "dim"),
    "cancelled": ("⊘", "magenta"),
}
_RUN_STYLES = {
    "queued": "dim",
    "running": "yellow",
    "waiting": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def _step_note(step: StepOut, now: datetime) -> str:
    if step.status == "failed" and step.error:
        return _compact(step.error.get("message", step.error), 100)
    if step.status == "waiting" and step.waiting_for:
        waiting = step.waiting_for
        if waiting.get("until") and not waiting.get("hook_id"):
            left = (datetime.fromisoformat(waiting["until"]) - now).total_seconds()
            return f"{max(left, 0):.1f} s to go" if left > 0 else "due"
        if waiting.get("hook_id"):
            return f"for hook {waiting['hook_id']}"
        if waiting.get("child_run_id"):
            return f"for run {waiting['child_run_id']}"
    if step.status in ("running", "succeeded", "failed", "cancelled"):
        return _duration(step.started_at, step.finished_at)
    return ""


def render_run(detail: RunDetail, *, live: bool = False) -> RenderableType:
    """A run as its progress display: a header with a progress bar, then one line per step."""
    now = datetime.now(UTC)
    active = detail.status not in ENDED
    header = Table.grid(padding=(0, 1))
    for _ in range(6):
        header.add_column()
    symbol = {"succeeded": "✓", "failed": "✗", "cancelled": "⊘"}.get(detail.status, "…")
    mark: RenderableType = (
        Spinner("dots", style="yellow") if live and active else Text(symbol, style=_RUN_STYLES[detail.status])
    )
    bar = ProgressBar(
        total=1.0,
        completed=detail.progress,
        width=24,
        pulse=detail.status == "queued" and live,
        complete_style="red" if detail.status == "failed" else "green" if detail.status == "succeeded" else "yellow",
        finished_style="green",
    )
    header.add_row(
        mark,
        Text(f"{detail.workflow} v{detail.version}", style="bold"),
        Text(detail.status, style=_RUN_STYLES[detail.status]),
        bar,
        Text(f"{round(detail.progress * 100):>3d}%"),
        Text(_duration(detail.started_at, detail.finished_at), style="dim"),
    )
    steps = Table.grid(padding=(0, 1))
    steps.add_column(width=2)
    steps.add_column()
    steps.add_column()
    steps.add_column(style="dim")
    for step in detail.steps:
        symbol, style = _STEP_MARKS.get(step.status, ("?", ""))
        attempt = f" (attempt {step.attempt})" if step.attempt > 1 else ""
        steps.add_row(
            Text(" " + symbol, style=style),
            Text(step.key),
            Text(step.status + attempt, style=style),
            Text(_step_note(step, now)),
        )
    return Group(Text(detail.id, style="dim"), header, steps)


class _LiveRun:
    """The live display's renderable: re-rendered at every refresh (spinner, clocks)."""

    def __init__(self) -> None:
        self.detail: RunDetail | None = None

    def __rich__(self) -> RenderableType:
        return render_run(self.detail, live=True) if self.detail else Text("")


async def _detail(runtime: Runtime, actor: Principal, run_id: str) -> RunDetail:
    row, steps = await runtime.workflows.detail(actor, run_id)
    return RunDetail(**RunOut.of(row).model_dump(), steps=[StepOut.of(step) for step in steps])


async def _await_end(
    runtime: Runtime, actor: Principal, run_id: str, *, seconds: float | None, show: Console | None
) -> RunDetail:
    """Poll the run until it ends or ``seconds`` pass. On ``show``: a live display when it is a
    terminal, else the final state once (a log gets one picture, not hundreds)."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    view = _LiveRun()
    live = Live(view, console=show, refresh_per_second=8) if show is not None and show.is_terminal else None
    with live if live is not None else contextlib.nullcontext():
        while True:
            detail = view.detail = await _detail(runtime, actor, run_id)
            if live is not None:
                live.refresh()
            remaining = None if deadline is None else deadline - loop.time()
            if detail.status in ENDED or (remaining is not None and remaining <= 0):
                break
            wait = POLL_SECONDS if remaining is None else min(POLL_SECONDS, remaining)
            await runtime.workflows.wait_for(run_id, wait)  # returns early when the run ends here
    if show is not None and live is None:
        show.print(render_run(detail))
    return detail


@contextlib.contextmanager
def _detach_on_interrupt(run_id: Callable[[], str | None]) -> Iterator[None]:
    """Ctrl+C while following stops following, not the run: say so, and where to find it again."""
    try:
        yield
    except KeyboardInterrupt:
        known = run_id()
        if known:
            err_console.print(
                f"\nStopped following run {known}; it goes on. See it with `trellis workflow status {known}`.",
                highlight=False,
            )
        raise typer.Exit(130) from None


def _show_display(as_json: bool) -> Console | None:
    """Where the live display goes: stderr (stdout stays for the result), not in --json mode unless
    stderr is a terminal."""
    return err_console if (not as_json or err_console.is_terminal) else None


def _finish(detail: RunDetail, as_json: bool, *, waited: float | None) -> None:
    """Print how a followed run ended and exit: 0 when it succeeded, 1 otherwise."""
    if as_json:
        print_json(detail)
    elif detail.status == "succeeded":
        _print_result(detail.result)
    if detail.status == "succeeded":
        return
    if not as_json:
        if detail.status == "failed":
            _print_run_error(detail)
        elif detail.status == "cancelled":
            err_console.print(f"[red]Error:[/red] run {detail.id} was cancelled", highlight=False)
        else:
            after = f" after {waited:g} s" if waited is not None else ""
            err_console.print(
                f"[red]Error:[/red] run {detail.id} is still {detail.status}{after}; "
                f"follow it with `trellis workflow events {detail.id} --follow`",
                highlight=False,
            )
    raise typer.Exit(1)


def _print_result(result: Any) -> None:
    if isinstance(result, str):
        sys.stdout.flush()
        sys.stdout.write(result.rstrip("\n") + "\n")
    else:
        console.print_json(json.dumps(result, ensure_ascii=False))


def _print_run_error(detail: RunDetail) -> None:
    error = detail.error or {}
    message = str(error.get("message", "the run failed"))
    err_console.print(f"[red]Error:[/red] run {detail.id} failed: {escape(message)}", highlight=False)
    said = [message]
    cause = error.get("cause")
    extra = [("cause", cause.get("message"))] if isinstance(cause, dict) else []
    extra += [(f"step {step.key}", step.error.get("message")) for step in detail.steps if step.error]
    for label, text in extra:
        if text and not any(str(text) in earlier for earlier in said):
            err_console.print(f"  {escape(label)}: {escape(str(text))}", highlight=False)
            said.append(str(text))


# -- runs ----------------------------------------------------------------------------------------------


def _input_data(raw: str | None, file: str | None, pairs: list[str] | None) -> Any:
    if raw is not None and file is not None:
        fail("give the input with --input or with --input-file, not both")
    data: Any = {}
    if raw is not None:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            fail(f"--input is not valid JSON: {exc}")
    elif file is not None:
        text = _read_text(file, "the input")
        try:
            data = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            fail(f"--input-file {file} is not valid JSON or YAML: {exc}")
    if pairs:
        if not isinstance(data, dict):
            fail("-i KEY=VALUE adds to a JSON object; the --input/--input-file given is not one")
        for spec in pairs:
            key, sep, value = spec.partition("=")
            if not sep or not key:
                raise typer.BadParameter(f"{spec!r}: expected KEY=VALUE", param_hint="-i/--input-value")
            try:
                data[key] = json.loads(value)
            except json.JSONDecodeError:
                data[key] = value
    return data


@workflow_app.command("run")
def workflow_run(
    name: Annotated[str, typer.Argument(help="The workflow's name.")],
    input_json: Annotated[
        str | None, typer.Option("--input", help='The input as JSON, e.g. \'{"name": "Ada"}\'.')
    ] = None,
    input_file: Annotated[
        str | None, typer.Option("--input-file", help="Read the input from a JSON or YAML file ('-': stdin).")
    ] = None,
    values: Annotated[
        list[str] | None,
        typer.Option(
            "--input-value",
            "-i",
            help="Set one input field: KEY=VALUE (repeatable). VALUE is read as JSON when it parses "
            "(1, true, [1,2]), else as text; quote it to keep text: -i zip='\"01234\"'.",
        ),
    ] = None,
    version: Annotated[int | None, typer.Option("--version", "-v", min=1, help="Run this version.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Run at most once for this key: a repeat prints the first run."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show live progress until the run ends; exit 0 only if it succeeded.")
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            "-w",
            min=0,
            help="Wait up to this many seconds for the run to end, then print its result; exit 0 only if it "
            "succeeded. With --follow: stop following after that long.",
        ),
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run of a workflow and print its id.

    Without --follow or --wait the run is queued for the server's workers. With them, on an embedded
    setup this command also runs the workflow's steps while it waits, so it works without a server.

        trellis workflow run hello -i name=Ada --follow

        trellis workflow run pause --input '{"seconds": 2}' --wait 30 --json

        trellis workflow run nightly --input-file input.yaml --idempotency-key 2026-12-01
    """
    data = _input_data(input_json, input_file, values)
    request = parse(ExecuteRequest, workflow=name, version=version, input=data, idempotency_key=idempotency_key)
    waiting = follow or wait is not None
    show = _show_display(as_json) if follow else None

    started_id: list[str] = []

    async def work(runtime: Runtime) -> tuple[ExecuteOut, RunDetail | None]:
        actor = await acting(runtime, api_key)
        row, created = await runtime.workflows.execute(actor, request)
        started_id.append(row.id)
        out = ExecuteOut(**RunOut.of(row).model_dump(), created=created)
        if not waiting:
            return out, None
        return out, await _await_end(runtime, actor, row.id, seconds=wait, show=show)

    with _detach_on_interrupt(lambda: started_id[0] if started_id else None):
        started, detail = _run_checked(work, workflow_worker=waiting and _runs_here())
    if detail is not None:
        _finish(detail, as_json, waited=wait)
        return
    if as_json:
        print_json(started)
        return
    if not started.created:
        console.print(
            f"Run [bold]{started.id}[/bold] already exists for this idempotency key ({started.status}).",
            highlight=False,
        )
    else:
        console.print(f"Queued run [bold]{started.id}[/bold] ({started.workflow} v{started.version}).", highlight=False)
    err_console.print(f"[dim]follow it: trellis workflow events {started.id} --follow[/dim]", highlight=False)


@workflow_app.command("status")
def workflow_status(
    run_id: RunIdArgument,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a run: its status, progress, each step's state, and its result or error.

    trellis workflow status run_0123456789abcdef
    """

    async def work(runtime: Runtime) -> RunDetail:
        actor = await acting(runtime, api_key)
        return await _detail(runtime, actor, run_id)

    detail = run(work)
    if as_json:
        print_json(detail)
        return
    console.print(render_run(detail))
    if detail.status == "succeeded":
        console.print("[bold]result[/bold]")
        _print_result(detail.result)
    elif detail.status == "failed":
        _print_run_error(detail)


@workflow_app.command("history")
def workflow_history(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow.")] = None,
    status: Annotated[
        list[StatusChoice] | None, typer.Option("--status", "-s", help="Only runs in this state (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_PAGE, help="Page size.")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor a previous page printed.")] = None,
    owner: Annotated[
        str | None, typer.Option(help="Whose: yours by default; an admin may give a user id or 'all'.")
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your runs, newest first (an admin: anyone's, with --owner).

    trellis workflow history --workflow hello --status failed --status cancelled -n 20
    """
    filters = HistoryFilters(
        workflow=workflow, statuses=tuple(s.value for s in status or ()), limit=limit, cursor=cursor, owner=owner
    )

    async def work(runtime: Runtime) -> RunPage:
        actor = await acting(runtime, api_key)
        rows, next_cursor = await runtime.workflows.history(actor, filters)
        return RunPage.of(rows, next_cursor, RunOut.of)

    page = run(work)
    if as_json:
        print_json(page)
        return
    if not page.items:
        err_console.print("No runs.")
        return
    table = Table(Column("id", no_wrap=True, min_width=36), "workflow", "status", "created", "took")
    for item in page.items:
        table.add_row(
            item.id,
            f"{item.workflow} v{item.version}",
            Text(
                item.status if item.status in ENDED else f"{item.status} {round(item.progress * 100)}%",
                style=_RUN_STYLES[item.status],
            ),
            item.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            _duration(item.started_at, item.finished_at) if item.started_at else "",
        )
    console.print(table)
    if page.next_cursor:
        err_console.print(f"[dim]more: --cursor {page.next_cursor}[/dim]", highlight=False)


@workflow_app.command("cancel")
def workflow_cancel(
    run_id: RunIdArgument,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a queued, waiting or running run (a running step is interrupted by its worker).

    trellis workflow cancel run_0123456789abcdef
    """

    async def work(runtime: Runtime) -> RunOut:
        actor = await acting(runtime, api_key)
        return RunOut.of(await runtime.workflows.cancel(actor, run_id))

    out = run(work)
    if as_json:
        print_json(out)
    elif out.status == "cancelled":
        console.print(f"Cancelled run [bold]{out.id}[/bold].", highlight=False)
    else:
        console.print(
            f"Cancel requested for run [bold]{out.id}[/bold] ({out.status}): its worker stops it.", highlight=False
        )


@workflow_app.command("retry")
def workflow_retry(
    run_id: RunIdArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show live progress until the run ends.")] = False,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retry a failed or cancelled run from the steps that did not succeed (the same run id; the
    outputs of steps that succeeded are kept).

        trellis workflow retry run_0123456789abcdef --follow
    """
    show = _show_display(as_json) if follow else None

    async def work(runtime: Runtime) -> tuple[RunOut, RunDetail | None]:
        actor = await acting(runtime, api_key)
        out = RunOut.of(await runtime.workflows.retry(actor, run_id))
        if not follow:
            return out, None
        return out, await _await_end(runtime, actor, run_id, seconds=None, show=show)

    with _detach_on_interrupt(lambda: run_id):
        out, detail = run(work, workflow_worker=follow and _runs_here())
    if detail is not None:
        _finish(detail, as_json, waited=None)
    elif as_json:
        print_json(out)
    else:
        console.print(f"Retrying run [bold]{out.id}[/bold] ({out.status}).", highlight=False)


def _event_line(event: EventOut) -> Text:
    line = Text()
    line.append(f"{event.seq:>4} ", style="dim")
    line.append(event.at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] + " ", style="dim")
    kind = event.type
    style = (
        "green"
        if kind.endswith("succeeded")
        else "red"
        if kind.endswith("failed")
        else "yellow"
        if kind.endswith(("started", "retrying", "lost"))
        else "cyan"
    )
    line.append(f"{kind:<16}" if event.step or event.data else kind, style=style)
    if event.step:
        line.append(f" {event.step}", style="bold")
    if event.data:
        line.append(" " + _compact(event.data))
    return line


@workflow_app.command("events")
def workflow_events(
    run_id: RunIdArgument,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the run ends.")
    ] = False,
    after: Annotated[int, typer.Option(min=0, help="Only events after this sequence number.")] = 0,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a run's event log (run.queued, step.started, step.succeeded, ...).

    With --json: the API's page ({items, last_seq}); with --follow --json: one JSON object per line.

        trellis workflow events run_0123456789abcdef

        trellis workflow events run_0123456789abcdef --follow --json | jq .type
    """

    async def work(runtime: Runtime) -> EventPage:
        actor = await acting(runtime, api_key)
        service = runtime.workflows
        seen = after
        collected: list[EventOut] = []
        out = Console(file=answer_stream(), highlight=False, soft_wrap=True)
        while True:
            rows = await service.events(actor, run_id, after=seen, limit=EVENTS_PAGE)
            for row in rows:
                event = EventOut.of(row)
                seen = event.seq
                if not follow:
                    collected.append(event)
                elif as_json:
                    out.file.write(event.model_dump_json() + "\n")
                    out.file.flush()
                else:
                    out.print(_event_line(event))
            if len(rows) == EVENTS_PAGE:
                continue
            if not follow:
                return EventPage(items=collected, last_seq=seen)
            current = await service.run(actor, run_id)
            if current.status in ENDED:
                if not await service.events(actor, run_id, after=seen, limit=1):
                    return EventPage(items=[], last_seq=seen)
                continue
            await service.wait_for(run_id, POLL_SECONDS)

    with _detach_on_interrupt(lambda: run_id):
        page = run(work, workflow_worker=follow and _runs_here())
    if follow:
        return
    if as_json:
        print_json(page)
        return
    for event in page.items:
        console.print(_event_line(event), soft_wrap=True, highlight=False)
