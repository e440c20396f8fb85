"""``trellis context search``: the same search as ``GET /api/context/search``, in-process.

It runs ``ContextSearch`` against the configured database, acting as the owner of an API key
(``--api-key``, ``TRELLIS_API_KEY``, or the saved admin key). ``--json`` prints what the API's
``data`` holds.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from trellis.cli.common import ApiKeyOption, JsonOption, acting, console, metadata_pairs, preview, run
from trellis.context.search.schemas import DEFAULT_LIMIT, MAX_LIMIT, SearchOut, SearchQuery
from trellis.runtime import Runtime
from trellis.storage.metadata_filter import metadata_filter_from_strings


def context_search(
    query: Annotated[str, typer.Argument(help="What to look for; any text (no query syntax).")],
    mode: Annotated[str, typer.Option("--mode", help="hybrid (default), semantic or keyword.")] = "hybrid",
    type_: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only contexts of this type (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help=f"How many hits, 1-{MAX_LIMIT}.")] = DEFAULT_LIMIT,
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", "-m", help="Only contexts whose metadata has KEY=VALUE (repeatable)."),
    ] = None,
    group: Annotated[
        str, typer.Option("--group", help="context (default): a hit per context; document: a hit per document.")
    ] = "context",
    passages: Annotated[bool, typer.Option("--passages", help="Each hit carries its best-matching chunk.")] = False,
    rerank: Annotated[
        bool, typer.Option("--rerank", help="Reorder the best candidates with the cross-encoder (slower).")
    ] = False,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search your contexts: keyword, semantic, or hybrid (both, fused by reciprocal rank)."""
    pairs = metadata_pairs(metadata or [])

    async def work(runtime: Runtime) -> SearchOut:
        parsed = SearchQuery.parse(
            query,
            mode=mode,
            types=type_ or (),
            metadata=metadata_filter_from_strings(pairs),
            limit=limit,
            group=group,
            passages=passages,
            rerank=rerank,
        )
        actor = await acting(runtime, api_key)
        return SearchOut.of(await runtime.search.search(actor, parsed, door="cli"))

    out = run(work)
    if as_json:
        console.print_json(out.model_dump_json())
        return
    if out.degraded:
        console.print(f"[yellow]Not available: {', '.join(out.degraded)}; showing the rest.[/yellow]")
    if out.rerank is not None and not out.rerank.applied:
        console.print(f"[yellow]Not reranked: {out.rerank.reason}[/yellow]")
    if not out.items:
        console.print("No matches.")
        return
    # Where each hit sits (document > headings) only when some hit is part of an ingested document.
    located = any(hit.document is not None for hit in out.items)
    table = Table("#", "score", "id", "type", "found by", *(["where"] if located else []), "content")
    for position, hit in enumerate(out.items, start=1):
        found = ", ".join(f"{name} #{r.rank}" for name, r in sorted(hit.retrievers.items()))
        where = " > ".join([hit.document.source if hit.document else "", *(hit.heading_path or [])]).strip(" >")
        table.add_row(
            str(position),
            f"{hit.score:.4f}",
            hit.context.id,
            hit.context.type,
            found,
            *([where] if located else []),
            preview(hit.passage or hit.context.content),
        )
    console.print(table)
