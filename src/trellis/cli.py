"""The ``trellis`` command line.

Management commands (users, keys, token) run the same services the REST door runs, in-process
against the configured database, acting as the owner of an API key: ``--api-key``, else
``TRELLIS_API_KEY``, else the admin key saved in the data directory on first start.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from trellis import __version__
from trellis.auth.schemas import ApiKeyCreate, ApiKeyOut, Principal, Scope, UserCreate, UserOut
from trellis.auth.secrets import ADMIN_KEY_FILE, read_private_file, write_private_file
from trellis.context.cli_app import context_app
from trellis.kit.errors import TrellisError
from trellis.runtime import Runtime, build_runtime
from trellis.settings import Role, Settings, SettingsError, load_settings
from trellis.storage import migrate as migrations

app = typer.Typer(
    name="trellis",
    help="Trellis: a self-hosted AI development ecosystem server.\n\n"
    "Start it with `trellis serve`; everything runs on embedded defaults until you set "
    "TRELLIS_DATABASE_URL or TRELLIS_REDIS_URL.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
users_app = typer.Typer(help="Manage users (admin).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys: your own, or anyone's as an admin.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(context_app, name="context")

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="TRELLIS_API_KEY", help="Act as this key's owner (default: the saved admin key)."),
]


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]Error:[/red] {message}")
    raise typer.Exit(code)


def _run(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Build a runtime, run one piece of work, close the runtime; errors become readable lines."""
    settings = _settings()

    async def main() -> T:
        runtime = build_runtime(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(main())
    except TrellisError as exc:
        detail = f" {json.dumps(exc.details)}" if exc.details else ""
        _fail(f"{exc.message}{detail}")
    except SettingsError as exc:
        _fail(str(exc), 2)
    except (OSError, ConnectionError) as exc:
        _fail(f"cannot reach a backend: {exc}")
    raise AssertionError("unreachable")


async def _acting(runtime: Runtime, api_key: str | None) -> Principal:
    key = api_key or read_private_file(runtime.settings.data_dir / ADMIN_KEY_FILE)
    if not key:
        _fail(
            "no API key: pass --api-key, set TRELLIS_API_KEY, or run `trellis serve` once "
            "to create the admin key in the data directory"
        )
    assert key is not None
    return await runtime.auth.authenticate_api_key(key)


def _emit(rows: Sequence[BaseModel] | BaseModel, as_json: bool, columns: Sequence[str]) -> None:
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


# --- service ---------------------------------------------------------------------------------


async def prepare_embedded(runtime: Runtime) -> str | None:
    """Migrate an embedded database and create the first admin. Returns a newly generated key."""
    await migrations.upgrade(runtime.database)
    result = await runtime.auth.bootstrap_admin()
    if result.generated_key:
        write_private_file(runtime.settings.data_dir / ADMIN_KEY_FILE, result.generated_key)
    return result.generated_key


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port.")] = 1,
) -> None:
    """Start the API server. On an embedded database, migrates it and creates the first admin."""
    import uvicorn

    from trellis.kit.logging import configure_logging

    settings = _settings()
    console.print(f"Trellis {__version__}")
    console.print(f"  data directory: [bold]{settings.data_dir}[/bold]")
    console.print(f"  database:       {_redact_url(settings.resolved_database_url)}")
    console.print(f"  redis:          {_redact_url(settings.redis_url) if settings.redis_url else 'off (in-process)'}")

    async def prepare(runtime: Runtime) -> str | None:
        if runtime.settings.embedded_database:
            return await prepare_embedded(runtime)
        revision = await migrations.current_revision(runtime.database)
        if revision != migrations.head_revision():
            _fail(f"database schema is at {revision}, expected {migrations.head_revision()}: run `trellis migrate`")
        result = await runtime.auth.bootstrap_admin()
        return result.generated_key

    generated = _run(prepare)
    if generated:
        console.print(
            f"\n[bold yellow]First start: created user '{settings.bootstrap_admin_username}' with this API key "
            f"(shown once, saved to {settings.data_dir / ADMIN_KEY_FILE}):[/bold yellow]\n  {generated}\n"
        )
    bind_host = host or settings.host
    bind_port = port or settings.port
    console.print(f"  listening on:   http://{bind_host}:{bind_port}  (docs at /docs)\n")
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(
        "trellis.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run repeatedly)."""
    settings = _settings()

    async def work(runtime: Runtime) -> str | None:
        return await migrations.upgrade(runtime.database)

    revision = _run(work)
    console.print(f"Database at revision [bold]{revision}[/bold] ({_redact_url(settings.resolved_database_url)})")


@app.command()
def version() -> None:
    """Print the Trellis version."""
    console.print(__version__)


@app.command()
def token(
    username: Annotated[str, typer.Argument(help="Who to log in as.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, envvar="TRELLIS_PASSWORD", help="Prompted when omitted.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Log in with a password and print a JWT (for `Authorization: Bearer ...`)."""

    async def work(runtime: Runtime) -> Any:
        return await runtime.auth.login(username, password)

    result = _run(work)
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        sys.stdout.write(result.access_token + "\n")


# --- users -----------------------------------------------------------------------------------

USER_COLUMNS = ("id", "username", "role", "disabled", "created_at")


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="3-64 letters, digits, '.', '_' or '-'.")],
    role: Annotated[Role, typer.Option(help="admin, developer or viewer.")] = Role.DEVELOPER,
    password: Annotated[
        str | None, typer.Option(help="Password for `trellis token` and /api/v1/auth/token; omit for key-only users.")
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user. Give them a key with `trellis keys create --user ID`."""
    try:
        data = UserCreate(username=username, password=password, role=role)
    except ValidationError as exc:
        _fail(_validation_message(exc))
        return

    async def work(runtime: Runtime) -> UserOut:
        actor = await _acting(runtime, api_key)
        return UserOut.model_validate(await runtime.auth.create_user(actor, data))

    _emit(_run(work), as_json, USER_COLUMNS)


@users_app.command("list")
def users_list(api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """List every user."""

    async def work(runtime: Runtime) -> list[UserOut]:
        actor = await _acting(runtime, api_key)
        return [UserOut.model_validate(u) for u in await runtime.auth.list_users(actor)]

    _emit(_run(work), as_json, USER_COLUMNS)


@users_app.command("disable")
def users_disable(
    user_id: Annotated[str, typer.Argument(help="The user's id (see `trellis users list`).")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Disable a user: their keys and tokens stop working on the next request."""

    async def work(runtime: Runtime) -> UserOut:
        actor = await _acting(runtime, api_key)
        return UserOut.model_validate(await runtime.auth.set_user_disabled(actor, user_id, True))

    _emit(_run(work), as_json, USER_COLUMNS)


# --- keys ------------------------------------------------------------------------------------

KEY_COLUMNS = ("id", "owner_id", "name", "prefix", "scopes", "expires_at", "revoked_at")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label to tell keys apart.")] = "cli",
    scope: Annotated[
        list[Scope] | None, typer.Option(help="Limit the key (repeatable): read, write, ai, admin.")
    ] = None,
    expires_in_days: Annotated[int | None, typer.Option(min=1, max=3650, help="Expire after N days.")] = None,
    user: Annotated[str | None, typer.Option(help="Admins: create the key for this user id.")] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    try:
        data = ApiKeyCreate(name=name, scopes=scope, expires_in_days=expires_in_days, user_id=user)
    except ValidationError as exc:
        _fail(_validation_message(exc))
        return

    async def work(runtime: Runtime) -> tuple[ApiKeyOut, str]:
        actor = await _acting(runtime, api_key)
        key, plaintext = await runtime.auth.create_key(actor, data)
        return ApiKeyOut.model_validate(key), plaintext

    out, plaintext = _run(work)
    if as_json:
        console.print_json(json.dumps({**out.model_dump(mode="json"), "key": plaintext}))
    else:
        console.print(f"Created key [bold]{out.id}[/bold] ({out.name}). Store it now; it is not shown again:")
        sys.stdout.write(plaintext + "\n")


@keys_app.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option(help="Admins: only this user's keys.")] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List API keys (prefixes only; keys themselves are never stored)."""

    async def work(runtime: Runtime) -> list[ApiKeyOut]:
        actor = await _acting(runtime, api_key)
        return [ApiKeyOut.model_validate(k) for k in await runtime.auth.list_keys(actor, user)]

    _emit(_run(work), as_json, KEY_COLUMNS)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `trellis keys list`).")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key; it stops working on the next request."""

    async def work(runtime: Runtime) -> ApiKeyOut:
        actor = await _acting(runtime, api_key)
        return ApiKeyOut.model_validate(await runtime.auth.revoke_key(actor, key_id))

    _emit(_run(work), as_json, KEY_COLUMNS)


# --- the model gateway -------------------------------------------------------------------------

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="TRELLIS_SERVER", help="A running Trellis (default: the configured host and port)."
    ),
]


def _server_url(settings: Settings, server: str | None) -> str:
    return (server or f"http://{settings.host}:{settings.port}").rstrip("/")


def _server_is_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _key_for(settings: Settings, api_key: str | None) -> str:
    key = api_key or read_private_file(settings.data_dir / ADMIN_KEY_FILE)
    if not key:
        _fail("no API key: pass --api-key, set TRELLIS_API_KEY, or run `trellis serve` once")
    assert key is not None
    return key


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name or alias (see `trellis models`).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Longest answer, in tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(min=0, max=2, help="0 for deterministic answers.")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated.")] = False,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask a model. Uses a running server when there is one, else runs the model in-process."""
    from trellis.gateway.schemas import GenerateRequest

    settings = _settings()
    try:
        body = GenerateRequest(
            prompt=prompt, model=model, max_tokens=max_tokens, temperature=temperature, stream=stream
        )
    except ValidationError as exc:
        _fail(_validation_message(exc))
        return
    url = _server_url(settings, server)
    if _server_is_up(url):
        _ask_server(url, _key_for(settings, api_key), body, as_json)
        return

    async def work(runtime: Runtime) -> Any:
        from trellis.gateway import tasks
        from trellis.gateway.service import CallContext

        if runtime.settings.embedded_database:
            await prepare_embedded(runtime)
        actor = await _acting(runtime, api_key)
        runtime.logs.start()
        try:
            prepared = await tasks.prepare_generate(runtime.gateway, body)
            ctx = CallContext(principal=actor, door="cli")
            if not stream:
                return await tasks.run(runtime.gateway, ctx, prepared)
            from trellis.gateway.service import StreamOutcome

            outcome = StreamOutcome()
            chunks = runtime.gateway.stream(ctx, prepared.model_name, prepared.model, prepared.request, outcome)
            try:
                async for chunk in chunks:
                    sys.stdout.write(chunk.delta)
                    sys.stdout.flush()
            finally:
                await chunks.aclose()
            sys.stdout.write("\n")
            return None
        finally:
            await runtime.logs.stop()

    result = _run(work)
    if result is not None:
        _print_generation(result.model_dump(), as_json)


def _print_generation(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(data))
        return
    sys.stdout.write(str(data["response"]).strip() + "\n")
    err_console.print(
        f"[dim]{data['model']} · {data['prompt_tokens']}+{data['completion_tokens']} tokens · "
        f"{data['response_time']:.2f}s{' · cached' if data['cached'] else ''}[/dim]"
    )


def _ask_server(url: str, key: str, body: Any, as_json: bool) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    payload = body.model_dump(exclude_none=True)
    with httpx.Client(timeout=httpx.Timeout(300, connect=5)) as client:
        if not body.stream:
            response = client.post(f"{url}/api/v1/ai/generate", json=payload, headers=headers)
            envelope = response.json()
            if not envelope.get("success"):
                _fail(envelope["error"]["message"])
            _print_generation(envelope["data"], as_json)
            return
        with client.stream("POST", f"{url}/api/v1/ai/generate", json=payload, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                _fail(response.json()["error"]["message"])
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "delta":
                        sys.stdout.write(data["text"])
                        sys.stdout.flush()
                    elif event == "error":
                        sys.stdout.write("\n")
                        _fail(data["message"])
            sys.stdout.write("\n")


@app.command()
def models(as_json: JsonOption = False) -> None:
    """List the configured models, their aliases and capabilities."""
    settings = _settings()
    rows = [
        {
            "name": name,
            "provider": m.provider,
            "model_id": m.model_id,
            "aliases": ", ".join(m.aliases),
            "capabilities": ", ".join(m.capabilities),
            "context_window": m.context_window,
            "fallbacks": ", ".join(m.fallbacks),
        }
        for name, m in sorted(settings.all_models().items())
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("name", "provider", "model_id", "aliases", "capabilities", "context", "fallbacks")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _redact_url(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    if not url:
        return ""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a redis URL is not a SQLAlchemy URL
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return url.replace(f":{parts.password}@", ":***@") if parts.password else url


@app.callback()
def _configure_cli_logging() -> None:
    """Logs go to stderr, warnings and up, human-readable: stdout stays clean for --json output.
    ``serve`` reconfigures logging from the settings before starting the server."""
    from trellis.kit.logging import configure_logging

    configure_logging("WARNING", json_output=False)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


# `trellis context ...` commands register themselves on context_app when imported. They use the
# helpers above (_run, _acting, ...), so they are imported here, after those exist.
from trellis.context import cli_core, cli_ingest, cli_search  # noqa: E402, F401
