"""The seam between writing contexts and indexing them for semantic search.

``ContextService`` (writes) calls an ``ContextIndexer`` after each commit; the real one
(``trellis.context.indexer``) embeds the contents through the gateway and stores the vectors.
Small writes are indexed before the call returns, so a context is searchable as soon as it is
created; large batches (ingestion) are scheduled and embedded in the background, in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ContextIndexer(Protocol):
    async def index(self, owner_id: str, context_ids: Sequence[str]) -> None:
        """Embed these contexts now (their current content) and store the vectors."""
        ...

    def schedule(self, owner_id: str, context_ids: Sequence[str]) -> None:
        """Embed these contexts soon, off the request path."""
        ...

    async def forget(self, owner_id: str, context_ids: Sequence[str]) -> None:
        """These contexts are gone (their rows cascade); drop anything cached in memory."""
        ...


class NoIndexer:
    """Indexing off: keyword search still works."""

    async def index(self, owner_id: str, context_ids: Sequence[str]) -> None:
        return None

    def schedule(self, owner_id: str, context_ids: Sequence[str]) -> None:
        return None

    async def forget(self, owner_id: str, context_ids: Sequence[str]) -> None:
        return None
