"""The ``trellis context`` command group; its commands live in cli_*.py modules of this package."""

from __future__ import annotations

import typer

context_app = typer.Typer(
    help="Manage contexts: add, get, search, link, remove, and ingest documents.", no_args_is_help=True
)
