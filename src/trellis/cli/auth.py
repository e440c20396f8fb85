"""``trellis users``, ``trellis keys`` and ``trellis token``: accounts and credentials, through
``AuthService`` in-process, acting as the owner of an API key (see ``trellis.cli.common``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from trellis.auth.schemas import ApiKeyCreate, ApiKeyOut, Scope, UserCreate, UserOut
from trellis.cli.common import ApiKeyOption, JsonOption, acting, console, emit, parse, run
from trellis.runtime import Runtime
from trellis.settings import Role

users_app = typer.Typer(help="Manage users (admin).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys: your own, or anyone's as an admin.", no_args_is_help=True)


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

    result = run(work)
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        sys.stdout.write(result.access_token + "\n")


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
    data = parse(UserCreate, username=username, password=password, role=role)

    async def work(runtime: Runtime) -> UserOut:
        actor = await acting(runtime, api_key)
        return UserOut.model_validate(await runtime.auth.create_user(actor, data))

    emit(run(work), as_json, USER_COLUMNS)


@users_app.command("list")
def users_list(api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """List every user."""

    async def work(runtime: Runtime) -> list[UserOut]:
        actor = await acting(runtime, api_key)
        return [UserOut.model_validate(u) for u in await runtime.auth.list_users(actor)]

    emit(run(work), as_json, USER_COLUMNS)


@users_app.command("disable")
def users_disable(
    user_id: Annotated[str, typer.Argument(help="The user's id (see `trellis users list`).")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Disable a user: their keys and tokens stop working on the next request."""

    async def work(runtime: Runtime) -> UserOut:
        actor = await acting(runtime, api_key)
        return UserOut.model_validate(await runtime.auth.set_user_disabled(actor, user_id, True))

    emit(run(work), as_json, USER_COLUMNS)


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
    data = parse(ApiKeyCreate, name=name, scopes=scope, expires_in_days=expires_in_days, user_id=user)

    async def work(runtime: Runtime) -> tuple[ApiKeyOut, str]:
        actor = await acting(runtime, api_key)
        key, plaintext = await runtime.auth.create_key(actor, data)
        return ApiKeyOut.model_validate(key), plaintext

    out, plaintext = run(work)
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
        actor = await acting(runtime, api_key)
        return [ApiKeyOut.model_validate(k) for k in await runtime.auth.list_keys(actor, user)]

    emit(run(work), as_json, KEY_COLUMNS)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `trellis keys list`).")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key; it stops working on the next request."""

    async def work(runtime: Runtime) -> ApiKeyOut:
        actor = await acting(runtime, api_key)
        return ApiKeyOut.model_validate(await runtime.auth.revoke_key(actor, key_id))

    emit(run(work), as_json, KEY_COLUMNS)
