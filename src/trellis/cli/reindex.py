"""``trellis context reindex [--model M] [--wait]``: change the embedding model safely, through the
same ``Reindexer`` as ``POST /api/context/reindex``, acting as an admin (``--api-key``,
``TRELLIS_API_KEY``, or the saved admin key).

Without ``--wait`` the reindex is started and left to the server (every ``trellis serve`` works a
running reindex in the background); ``--wait`` works it in this process with a progress bar, or,
when a server already holds it, follows its progress until it ends. ``--status`` only shows the
active model and the last reindex. Searches keep using the old model until the new one's vectors
are complete.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trellis.cli.common import ApiKeyOption, JsonOption, acting, console, err_console, prepare_embedded, run
from trellis.context.index.schemas import ReindexOut
from trellis.runtime import Runtime

FOLLOW_SECONDS = 1.0


def reindex(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="The embedding model (default: the configured one).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Work (or follow) the reindex until it ends.")] = False,
    status_only: Annotated[bool, typer.Option("--status", help="Only show the active model and progress.")] = False,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-embed every context with an embedding model; searches switch to it when it is complete."""

    async def work(runtime: Runtime) -> ReindexOut:
        if runtime.settings.embedded_database:
            await prepare_embedded(runtime)
        actor = await acting(runtime, api_key)
        reindexer = runtime.reindexer
        if status_only:
            return await reindexer.status(actor)
        state = await reindexer.start(actor, model, door="cli")
        if not wait:
            return state
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task(f"Embedding with {state.target_model}", total=state.total or None)

            def show(current: ReindexOut) -> None:
                progress.update(task, total=current.total or None, completed=current.done)

            while True:
                await reindexer.work(on_progress=show)
                state = await reindexer.current()
                show(state)
                if state.status != "running" or state.job_id is None:
                    return state
                # Another process (a server) holds the reindex: follow it.
                await asyncio.sleep(FOLLOW_SECONDS)

    out = run(work)
    if as_json:
        console.print_json(out.model_dump_json())
    else:
        table = Table("status", "active model", "target model", "done", "started", "finished", title="Reindex")
        table.add_row(
            out.status,
            out.active_model or "-",
            out.target_model or "-",
            f"{out.done}/{out.total}",
            str(out.started_at or "-"),
            str(out.finished_at or "-"),
        )
        console.print(table)
        if out.error:
            err_console.print(f"[red]Failed:[/red] {out.error}")
        elif out.status == "running" and not wait:
            err_console.print("Started: the server re-embeds in the background; follow it with --status or --wait.")
    if out.status == "failed":
        raise typer.Exit(1)
