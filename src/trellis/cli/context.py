"""``trellis context add|get|rm|link``: the context store's core from the command line.

Like the other management commands, these run ``ContextService`` in-process against the configured
database, acting as the owner of an API key (``--api-key``, ``TRELLIS_API_KEY``, or the saved
admin key), so the REST door's rules apply unchanged. ``--json`` prints what the API's ``data`` holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from trellis.cli.common import (
    ApiKeyOption,
    JsonOption,
    acting,
    console,
    err_console,
    fail,
    metadata_pairs,
    preview,
    print_json,
    run,
    validation_message,
)
from trellis.context.schemas import (
    DEFAULT_PAGE,
    MAX_PAGE,
    ContextCreate,
    ContextCreated,
    ContextDeleted,
    ContextListQuery,
    ContextOut,
    ContextPage,
    RelationshipCreate,
    RelationshipOut,
)
from trellis.runtime import Runtime
from trellis.storage.metadata_filter import metadata_filter_from_strings

context_app = typer.Typer(
    help="Manage contexts: add, get, search, link, remove, and ingest documents.", no_args_is_help=True
)


def _read_content(content: str | None, file: str | None) -> str:
    if (content is None) == (file is None):
        fail("give the content as an argument or with --file (one of them)")
    if file is None:
        assert content is not None
        return content
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")
    raise AssertionError("unreachable")


def _parse_metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"--metadata is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail('--metadata must be a JSON object, like \'{"team": "core"}\'')
    metadata: dict[str, Any] = value
    return metadata


def _parse_link(spec: str) -> dict[str, Any]:
    """``TARGET_ID:TYPE[:STRENGTH]``."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        fail(f"--link {spec!r}: expected TARGET_ID:TYPE or TARGET_ID:TYPE:STRENGTH")
    link: dict[str, Any] = {"target_context_id": parts[0], "relationship_type": parts[1]}
    if len(parts) == 3:
        try:
            link["strength"] = float(parts[2])
        except ValueError:
            fail(f"--link {spec!r}: the strength must be a number from 0 to 1")
    return link


def _describe(out: ContextOut) -> None:
    console.print(
        f"[bold]{out.id}[/bold]  {out.type}  version {out.version}  updated {out.updated_at.isoformat()}",
        highlight=False,
    )
    if out.source:
        console.print(f"source: {out.source}", markup=False, highlight=False)
    if out.metadata:
        console.print(f"metadata: {json.dumps(out.metadata, ensure_ascii=False)}", markup=False, highlight=False)
    sys.stdout.flush()
    sys.stdout.write("\n" + out.content.rstrip("\n") + "\n")


def _describe_link(rel: RelationshipOut) -> str:
    return f"{rel.source_id} -[{rel.relationship_type} {rel.strength:g}]-> {rel.target_id}  ({rel.id})"


@context_app.command("add")
def context_add(
    content: Annotated[str | None, typer.Argument(help="The text (or use --file).")] = None,
    type_: Annotated[str, typer.Option("--type", "-t", help="Context type, e.g. note, decision, code.")] = "note",
    file: Annotated[str | None, typer.Option("--file", "-f", help="Read the content from a file ('-': stdin).")] = None,
    metadata: Annotated[str | None, typer.Option("--metadata", "-m", help="A JSON object.")] = None,
    link: Annotated[
        list[str] | None,
        typer.Option("--link", "-l", help="Relate to another context: TARGET_ID:TYPE[:STRENGTH] (repeatable)."),
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a context (with its relationships, all or nothing)."""
    text = _read_content(content, file)
    try:
        data = ContextCreate(
            type=type_,
            content=text,
            metadata=_parse_metadata(metadata),
            relationships=[RelationshipCreate.model_validate(_parse_link(s)) for s in link] if link else None,
        )
    except ValidationError as exc:
        fail(validation_message(exc))
        return

    async def work(runtime: Runtime) -> ContextCreated:
        actor = await acting(runtime, api_key)
        row, edges = await runtime.context.create(actor, data)
        out = ContextOut.of(row)
        return ContextCreated(**out.model_dump(), relationships=[RelationshipOut.of(e, row.id) for e in edges])

    created = run(work)
    if as_json:
        print_json(created)
        return
    console.print(f"Created [bold]{created.id}[/bold] ({created.type}, version {created.version})", highlight=False)
    for rel in created.relationships:
        console.print(f"  linked {_describe_link(rel)}", markup=False, highlight=False)


@context_app.command("list")
def context_list(
    type_: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only contexts of this type (repeatable).")
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", "-m", help="Only contexts whose metadata has KEY=VALUE (repeatable)."),
    ] = None,
    sort: Annotated[str, typer.Option(help="updated, -updated (newest first), created or -created.")] = "-updated",
    limit: Annotated[int, typer.Option("--limit", "-n", help=f"Page size, 1-{MAX_PAGE}.")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor a previous page printed.")] = None,
    owner: Annotated[
        str | None, typer.Option(help="Whose: yours by default; an admin may give a user id or 'all'.")
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List your contexts, newest first, a page at a time (the same as GET /api/context; an admin may
    list another user's or everyone's with --owner)."""
    pairs = metadata_pairs(metadata or [])

    async def work(runtime: Runtime) -> ContextPage:
        query = ContextListQuery.parse(
            types=type_ or (),
            metadata=metadata_filter_from_strings(pairs),
            sort=sort,
            limit=limit,
            cursor=cursor,
            owner=owner,
        )
        actor = await acting(runtime, api_key)
        rows, next_cursor = await runtime.context.list_page(actor, query)
        return ContextPage.of(rows, next_cursor, ContextOut.of)

    page = run(work)
    if as_json:
        print_json(page)
        return
    table = Table("id", "type", "version", "updated", "content")
    for item in page.items:
        table.add_row(
            item.id, item.type, str(item.version), item.updated_at.isoformat(timespec="seconds"), preview(item.content)
        )
    console.print(table)
    if page.next_cursor:
        err_console.print(f"[dim]more: --cursor {page.next_cursor}[/dim]", highlight=False)


@context_app.command("get")
def context_get(
    context_id: Annotated[str, typer.Argument(help="The context's id.")],
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a context: its type, version and metadata, then its content."""

    async def work(runtime: Runtime) -> ContextOut:
        actor = await acting(runtime, api_key)
        return ContextOut.of(await runtime.context.get(actor, context_id))

    out = run(work)
    if as_json:
        print_json(out)
    else:
        _describe(out)


@context_app.command("rm")
def context_rm(
    context_id: Annotated[str, typer.Argument(help="The context's id.")],
    if_version: Annotated[
        int | None, typer.Option("--if-version", min=1, help="Delete only if still at this version.")
    ] = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a context and its relationships (both directions)."""

    async def work(runtime: Runtime) -> ContextDeleted:
        actor = await acting(runtime, api_key)
        return await runtime.context.delete(actor, context_id, expected_version=if_version)

    out = run(work)
    if as_json:
        print_json(out)
        return
    removed = out.relationships_removed
    extra = f" and {removed} relationship{'' if removed == 1 else 's'}" if removed else ""
    console.print(f"Deleted [bold]{out.id}[/bold]{extra}", highlight=False)


@context_app.command("link")
def context_link(
    source_id: Annotated[str, typer.Argument(help="The context the relationship starts from.")],
    target_id: Annotated[str, typer.Argument(help="The context it points to.")],
    relationship_type: Annotated[
        str, typer.Option("--type", "-t", help="e.g. depends_on, implements, part_of.")
    ] = "related_to",
    strength: Annotated[float, typer.Option("--strength", "-s", help="From 0 to 1.")] = 1.0,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Relate one context to another."""
    try:
        data = RelationshipCreate(target_context_id=target_id, relationship_type=relationship_type, strength=strength)
    except ValidationError as exc:
        fail(validation_message(exc))
        return

    async def work(runtime: Runtime) -> RelationshipOut:
        actor = await acting(runtime, api_key)
        return await runtime.context.add_relationship(actor, source_id, data)

    rel = run(work)
    if as_json:
        print_json(rel)
    else:
        console.print(f"Linked {_describe_link(rel)}", markup=False, highlight=False)
