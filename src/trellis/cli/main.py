"""The ``trellis`` command line: the root Typer app and the only module that imports the command
groups (``auth``, ``gateway``, ``context``, ``search``, ``ingest``, ``workflow``), which register
nothing by themselves. Server commands (``serve``, ``migrate``, ``version``) live here.

Management commands run the same services the REST door runs, in-process against the configured
database, acting as the owner of an API key: ``--api-key``, else ``TRELLIS_API_KEY``, else the
admin key saved in the data directory on first start (see ``trellis.cli.common``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from trellis import __version__
from trellis.auth.secrets import ADMIN_KEY_FILE
from trellis.cli import alerts, auth, context, dspy, gateway, ingest, metrics, reindex, search, workflow
from trellis.cli.common import console, fail, prepare_embedded, redact_url, run, settings
from trellis.runtime import Runtime
from trellis.storage import migrate as migrations

app = typer.Typer(
    name="trellis",
    help="Trellis: a self-hosted AI development ecosystem server.\n\n"
    "Start it with `trellis serve`; everything runs on embedded defaults until you set "
    "TRELLIS_DATABASE_URL or TRELLIS_REDIS_URL.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(auth.users_app, name="users")
app.add_typer(auth.keys_app, name="keys")
app.command()(auth.token)
app.command()(gateway.ask)
app.command()(gateway.models)
context.context_app.command("search")(search.context_search)
context.context_app.command("ingest")(ingest.ingest)
context.context_app.command("reindex")(reindex.reindex)
app.add_typer(context.context_app, name="context")
app.add_typer(workflow.workflow_app, name="workflow")
app.add_typer(metrics.metrics_app, name="metrics")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(dspy.dspy_app, name="dspy")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
) -> None:
    """Start the API server. On an embedded database, migrates it and creates the first admin."""
    import uvicorn

    from trellis.app import UVICORN_WS_PROTOCOL
    from trellis.kit.logging import configure_logging

    loaded = settings()

    async def prepare(runtime: Runtime) -> str | None:
        if runtime.settings.embedded_database:
            return await prepare_embedded(runtime)
        revision = await migrations.current_revision(runtime.database)
        if revision != migrations.head_revision():
            fail(f"database schema is at {revision}, expected {migrations.head_revision()}: run `trellis migrate`")
        result = await runtime.auth.bootstrap_admin()
        return result.generated_key

    generated = run(prepare)
    bind_host = host or loaded.host
    bind_port = port or loaded.port
    url = f"http://{bind_host}:{bind_port}"
    key_file = loaded.data_dir / ADMIN_KEY_FILE
    console.print(f"[bold]Trellis {__version__}[/bold]  {url}", highlight=False)
    console.print(f"  API docs        {url}/docs", highlight=False)
    console.print(f"  data directory  {loaded.data_dir}", highlight=False)
    console.print(f"  database        {redact_url(loaded.resolved_database_url)}", highlight=False)
    redis = redact_url(loaded.redis_url) if loaded.redis_url else "off (in-process cache, limits and breakers)"
    console.print(f"  redis           {redis}", highlight=False)
    bus = "Redis bus" if loaded.redis_url else "in-process bus"
    console.print(f"  live events     ws://{bind_host}:{bind_port}/ws  ({bus})", highlight=False)
    if generated:
        console.print(
            f"\n[bold yellow]First start: created user '{loaded.bootstrap_admin_username}'. Its API key, shown "
            f"once and saved to {key_file}:[/bold yellow]\n  {generated}\n",
            highlight=False,
        )
    elif loaded.embedded_database and key_file.exists():
        console.print(f"  admin key       {key_file}  (the CLI uses it by default)", highlight=False)
    console.print('\nTry: trellis ask "Write a haiku about trellises"   ·   Ctrl+C stops the server\n')
    configure_logging(loaded.log_level, loaded.log_json if loaded.log_json is not None else not sys.stderr.isatty())
    uvicorn.run(
        "trellis.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_config=None,
        access_log=False,
        # Forwarded headers are believed only from [trusted_proxies], by the app (create_app).
        proxy_headers=False,
        server_header=False,
        # /ws answers a message over [ws] max_message_bytes with an error and closes (1009); one far
        # bigger is not even read into memory: uvicorn closes the socket (1009) itself.
        ws_max_size=2 * loaded.ws.max_message_bytes,
        ws_per_message_deflate=loaded.ws.compression,
        ws=UVICORN_WS_PROTOCOL,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Runs executed at once (default [workflow] worker_concurrency).")
    ] = None,
) -> None:
    """Run workflow steps in this process, next to the API servers.

    Takes the runs the API queues on `[workflow] queue_url` (Redis Streams `redis://`, NATS `nats://`,
    RabbitMQ `amqp://`) and, from the database, everything else that is due: waits that ended,
    retries, and runs whose worker died (their lease expired). Run as many as you like; the
    database decides who runs what. Ctrl+C or SIGTERM stops it: running steps get
    `[workflow] shutdown_grace_seconds` to finish, then go back to the database for another worker.

    Example: `TRELLIS_WORKFLOW__QUEUE_URL=redis://127.0.0.1:6379/0 trellis worker` (with the API's
    TRELLIS_DATABASE_URL, TRELLIS_JWT_SECRET and TRELLIS_WORKFLOW__SECRET_KEYS).
    """
    import signal

    from trellis.kit.heap import settle_heap
    from trellis.kit.logging import configure_logging

    loaded = settings()
    if concurrency is not None:
        loaded.workflow.worker_concurrency = concurrency
    configure_logging(loaded.log_level, loaded.log_json if loaded.log_json is not None else not sys.stderr.isatty())

    async def work(runtime: Runtime) -> None:
        pool = runtime.own_workflow_worker()
        pool.start()
        runtime.monitoring.start()  # this process's metrics, and a turn at evaluating alerts
        settle_heap(loaded.gc_young_threshold)  # fewer, shorter GC pauses from now on (kit/heap.py)
        queue = runtime.work_queue
        if queue is not None:
            await queue.consume(pool.handle, concurrency=loaded.workflow.worker_concurrency)
        source = (
            redact_url(loaded.workflow.queue_url) if loaded.workflow.queue_url else "the database only (no queue_url)"
        )
        console.print(f"[bold]Trellis worker[/bold] {pool.worker_id}", highlight=False)
        console.print(f"  database  {redact_url(loaded.resolved_database_url)}", highlight=False)
        console.print(f"  queue     {source}", highlight=False)
        console.print(f"  runs      {loaded.workflow.worker_concurrency} at once · Ctrl+C stops", highlight=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        console.print("Stopping: finishing or handing back running steps ...")

    run(work)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run repeatedly)."""
    loaded = settings()

    async def work(runtime: Runtime) -> str | None:
        return await migrations.upgrade(runtime.database)

    revision = run(work)
    console.print(f"Database at revision [bold]{revision}[/bold] ({redact_url(loaded.resolved_database_url)})")


@app.command()
def version() -> None:
    """Print the Trellis version."""
    console.print(__version__)


@app.callback()
def _configure_cli_logging() -> None:
    """Logs go to stderr, warnings and up, human-readable: stdout stays clean for --json output.
    ``serve`` reconfigures logging from the settings before starting the server."""
    from trellis.kit.logging import configure_logging

    configure_logging("WARNING", json_output=False)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
