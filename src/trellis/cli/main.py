"""The ``trellis`` command line: the root Typer app and the only module that imports the command
groups (``auth``, ``gateway``, ``context``, ``search``, ``ingest``, ``workflow``), which register
nothing by themselves. Server commands (``serve``, ``migrate``, ``version``) live here.

Management commands run the same services the REST door runs, in-process against the configured
database, acting as the owner of an API key: ``--api-key``, else ``TRELLIS_API_KEY``, else the
admin key saved in the data directory on first start (see ``trellis.cli.common``).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from trellis import __version__
from trellis.auth.secrets import ADMIN_KEY_FILE
from trellis.cli import auth, context, gateway, ingest, search, workflow
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
app.add_typer(context.context_app, name="context")
app.add_typer(workflow.workflow_app, name="workflow")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
) -> None:
    """Start the API server. On an embedded database, migrates it and creates the first admin."""
    import uvicorn

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
    )


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
