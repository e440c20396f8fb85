"""``trellis context ingest PATH...``: ingest files and directories through ``IngestService``, in-process.

Directories are walked recursively, in name order, skipping hidden files and directories and
``node_modules``, ``__pycache__``, ``.git``, ``.venv``/``venv``; symbolic links to directories are not
followed. Files of an unsupported kind, and empty files, are skipped with a note. Each file is one
ingest call (one transaction), so a progress bar can follow along and a file the service refuses
(not UTF-8, too large), or a path that does not exist, is reported as failed without stopping the
rest; the exit code is then 1.

A file's source is its path relative to the working directory when it lies below it, else its
absolute path (``/`` separators): run the command from the same place to re-ingest idempotently.
Like ``trellis ask``, an embedded database is migrated first. The chunks are embedded before the
command returns (the process is about to end, so nothing is left for the background).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from trellis.cli.common import ApiKeyOption, JsonOption, acting, console, err_console, prepare_embedded, run
from trellis.context.ingest.chunking import detect_kind
from trellis.context.ingest.schemas import IngestResult, IngestStatus
from trellis.context.ingest.service import source_name as stored_source
from trellis.kit.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from trellis.runtime import Runtime

SKIPPED_DIRECTORIES = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__"})


@dataclass
class _Outcome:
    results: list[IngestResult]
    skipped: list[dict[str, str]]
    failed: list[dict[str, str]]

    def summary(self) -> dict[str, int]:
        counts = {status.value: 0 for status in IngestStatus}
        for result in self.results:
            counts[result.status.value] += 1
        return {**counts, "skipped": len(self.skipped), "failed": len(self.failed)}


def source_name(path: Path, cwd: Path) -> str:
    """The name a file is ingested under (before the service's one rule, ``stored_source``): relative to
    the working directory when it is inside it."""
    absolute = path.absolute()
    try:
        return absolute.relative_to(cwd).as_posix()
    except ValueError:
        return absolute.as_posix()


def collect_files(paths: list[Path]) -> tuple[list[Path], list[dict[str, str]], list[dict[str, str]]]:
    """Files to ingest, in order and without repeats; the paths skipped, and those missing (with why)."""
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    missing: list[dict[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        if detect_kind(path.name) is None:
            skipped.append({"path": str(path), "reason": "unsupported file type"})
        elif path.stat().st_size == 0:
            skipped.append({"path": str(path), "reason": "empty"})
        else:
            files.append(path)

    for root in paths:
        if root.is_file():
            add(root)
        elif root.is_dir():
            for directory, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_DIRECTORIES)
                for name in sorted(filenames):
                    path = Path(directory) / name
                    if not name.startswith(".") and path.is_file():
                        add(path)
        else:
            missing.append({"path": str(root), "reason": "not found"})
    return files, skipped, missing


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and directories (walked recursively).")],
    type_: Annotated[
        str | None, typer.Option("--type", help="Type for the documents and their chunks (default: document/chunk).")
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest documents: each file becomes a document plus chunks (by heading, definition or paragraph)."""
    cwd = Path.cwd()
    files, skipped, missing = collect_files(paths)

    async def work(runtime: Runtime) -> _Outcome:
        if runtime.settings.embedded_database:
            await prepare_embedded(runtime)
        actor = await acting(runtime, api_key)
        service = runtime.ingest
        outcome = _Outcome([], list(skipped), list(missing))
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[file]}", style="dim"),
            console=err_console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("Ingesting", total=len(files), file="")
            for path in files:
                source = source_name(path, cwd)
                progress.update(task, file=source)
                try:
                    service.check_size(source, path.stat().st_size)
                    data = path.read_bytes()
                    outcome.results.extend(
                        await service.ingest(actor, [(source, data)], type_override=type_, index_now=True)
                    )
                except (ValidationFailed, PayloadTooLarge, UnsupportedMediaType) as exc:
                    if "file" not in exc.details:  # the request itself is wrong (--type), not a file: stop
                        raise
                    outcome.failed.append(
                        {"path": str(path), "reason": exc.message.removeprefix(f"{stored_source(source)}: ")}
                    )
                except OSError as exc:
                    outcome.failed.append({"path": str(path), "reason": f"cannot read: {exc.strerror or exc}"})
                progress.advance(task)
        return outcome

    outcome = run(work)
    if as_json:
        data: dict[str, Any] = {
            "files": [r.model_dump(mode="json") for r in outcome.results],
            "skipped": outcome.skipped,
            "failed": outcome.failed,
            "summary": outcome.summary(),
        }
        console.print_json(json.dumps(data))
    else:
        for item in outcome.skipped:
            err_console.print(f"[dim]skipped {escape(item['path'])}: {escape(item['reason'])}[/dim]", highlight=False)
        for item in outcome.failed:
            err_console.print(f"[red]failed[/red] {escape(item['path'])}: {escape(item['reason'])}", highlight=False)
        table = Table("created", "unchanged", "replaced", "skipped", "failed", title="Ingested")
        table.add_row(*(str(n) for n in outcome.summary().values()))
        console.print(table)
    if outcome.failed:
        raise typer.Exit(1)
