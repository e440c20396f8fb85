"""What every ``trellis`` command shares: settings, the one way to run work against a runtime,
acting as a key's owner, printing tables or JSON, and readable failures.

The rule for commands: parse arguments into the same request schemas the REST door uses, then
``run(work)`` an async function that calls the runtime's services, then print. ``run`` builds a
runtime, starts its log writer (every model call a command makes is in the episodic log), closes
it (draining that writer and the indexer) and turns domain errors into one red line and exit code
1. While the work runs, stdout is lent to stderr so that nothing a service prints can corrupt an
answer (``--json`` output stays parseable); a command that streams its answer while working writes
it to ``answer_stream()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from trellis.auth.schemas import Principal
from trellis.auth.secrets import ADMIN_KEY_FILE, read_private_file, write_private_file
from trellis.kit.errors import TrellisError
from trellis.runtime import Runtime, build_runtime
from trellis.settings import Settings, SettingsError, load_settings
from trellis.storage import migrate as migrations

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="TRELLIS_API_KEY", help="Act as this key's owner (default: the saved admin key)."),
]
NO_KEY = (
    "no API key: pass --api-key, set TRELLIS_API_KEY, or run `trellis serve` once to create the admin key "
    "in the data directory"
)

_answer: ContextVar[TextIO | None] = ContextVar("trellis_cli_answer", default=None)


def settings() -> Settings:
    """The settings, or exit 2 with the message naming the bad one."""
    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]Error:[/red] {message}")
    raise typer.Exit(code)


def answer_stream() -> TextIO:
    """Where to write an answer while ``run`` is working (the real stdout)."""
    return _answer.get() or sys.stdout


def run(work: Callable[[Runtime], Awaitable[T]], *, workflow_worker: bool = False) -> T:
    """Build a runtime, start its log writer, run ``work``, close the runtime; errors become readable lines.

    ``workflow_worker=True`` also starts this process's workflow worker, if it has one (embedded: no
    ``[workflow] queue_url``), for commands that wait for a run: the run then executes even when no
    server runs on this data directory (when one does, the claim in the database decides who runs it).
    """
    loaded = settings()

    async def main() -> T:
        runtime = build_runtime(loaded)
        runtime.start(index_sweep=False, workflow_worker=workflow_worker, monitoring=False)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    token = _answer.set(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return asyncio.run(main())
    except TrellisError as exc:
        detail = f" {json.dumps(exc.details)}" if exc.details else ""
        fail(f"{exc.message}{detail}")
    except SettingsError as exc:
        fail(str(exc), 2)
    except (OSError, ConnectionError) as exc:
        fail(f"cannot reach a backend: {exc}")
    finally:
        _answer.reset(token)


def api_key_for(loaded: Settings, api_key: str | None) -> str:
    """``--api-key`` / ``TRELLIS_API_KEY``, else the admin key saved in the data directory."""
    key = api_key or read_private_file(loaded.data_dir / ADMIN_KEY_FILE)
    if not key:
        fail(NO_KEY)
    return key


async def acting(runtime: Runtime, api_key: str | None) -> Principal:
    """The principal a command acts as: the owner of its API key, checked like any request's."""
    return await runtime.auth.authenticate_api_key(api_key_for(runtime.settings, api_key))


async def prepare_embedded(runtime: Runtime) -> str | None:
    """Migrate an embedded database and create the first admin. Returns a newly generated key."""
    await migrations.upgrade(runtime.database)
    result = await runtime.auth.bootstrap_admin()
    if result.generated_key:
        write_private_file(runtime.settings.data_dir / ADMIN_KEY_FILE, result.generated_key)
    return result.generated_key


def emit(rows: Sequence[BaseModel] | BaseModel, as_json: bool, columns: Sequence[str]) -> None:
    """Print models as a table of ``columns``, or as JSON (one object, or a list)."""
    items = [rows] if isinstance(rows, BaseModel) else list(rows)
    if as_json:
        data: Any = [r.model_dump(mode="json") for r in items]
        console.print_json(json.dumps(data[0] if isinstance(rows, BaseModel) else data))
        return
    table = Table(*columns)
    for item in items:
        dumped = item.model_dump(mode="json")
        table.add_row(*("" if dumped.get(c) is None else str(dumped.get(c)) for c in columns))
    console.print(table)


def print_json(model: BaseModel) -> None:
    console.print_json(model.model_dump_json())


def validation_message(exc: ValidationError) -> str:
    """A request schema's complaint as one line: ``field: problem; other: problem``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def parse(schema: Callable[..., T], **fields: Any) -> T:
    """Build a request schema from options, or fail with its complaint as one line."""
    try:
        return schema(**fields)
    except ValidationError as exc:
        fail(validation_message(exc))


def redact_url(url: str | None) -> str:
    """A database or Redis URL with its password hidden, for printing."""
    from sqlalchemy.engine import make_url

    if not url:
        return ""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a redis URL is not a SQLAlchemy URL
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return url.replace(f":{parts.password}@", ":***@") if parts.password else url


PREVIEW_CHARS = 80


def metadata_pairs(specs: list[str]) -> list[tuple[str, str]]:
    """``--metadata KEY=VALUE`` options as the query-string pairs the REST door receives."""
    pairs = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep:
            raise typer.BadParameter(f"{spec!r}: expected KEY=VALUE", param_hint="--metadata")
        pairs.append((f"metadata.{key}", value))
    return pairs


def preview(content: str) -> str:
    """A content's first line or so, whitespace collapsed, for a table cell."""
    flat = " ".join(content.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"
