"""The two contracts of indexing: ``ContextIndexer`` (the seam between writing contexts and indexing
them) and ``VectorIndex`` (where vectors are stored and searched).

The seam:

``ContextService`` (writes) calls an ``ContextIndexer`` after each commit; the real one
(``trellis.context.index.service``) embeds the contents through the gateway and stores the vectors.
Small writes are indexed before the call returns, so a context is searchable as soon as it is
created; large batches (ingestion) are scheduled and embedded in the background, in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from trellis.kit.vector_math import FloatArray
from trellis.storage.metadata_filter import MetadataFilter

DEFAULT_EF_SEARCH = 200


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


class DimensionMismatch(ValueError):
    """A query vector whose length differs from the stored vectors'."""


@dataclass(frozen=True, slots=True)
class VectorEntry:
    """A context's vector, computed from the content whose hash is ``content_hash``."""

    context_id: str
    content_hash: str
    vector: Sequence[float] | FloatArray


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """Only contexts of one of ``types`` (when given) whose metadata matches ``metadata``."""

    types: tuple[str, ...] = ()
    metadata: MetadataFilter = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.types or self.metadata)


NO_FILTER = VectorFilter()


@dataclass(frozen=True, slots=True)
class VectorHit:
    context_id: str
    score: float  # cosine similarity, -1..1


class VectorIndex(Protocol):
    @property
    def kind(self) -> str:
        """``exact`` or ``pgvector``."""
        ...

    async def upsert(self, owner_id: str, model: str, entries: Sequence[VectorEntry]) -> None:
        """Store vectors. An entry whose context is gone, belongs to someone else, or whose content
        has changed since (``content_hash`` differs) is skipped: a stale vector is never stored."""
        ...

    async def delete(self, owner_id: str, context_ids: Sequence[str]) -> None:
        """Remove these contexts' vectors (deleting a context cascades to its vector anyway)."""
        ...

    async def search(
        self, owner_id: str, model: str, query: Sequence[float] | FloatArray, k: int, filters: VectorFilter = NO_FILTER
    ) -> list[VectorHit]:
        """The owner's ``k`` contexts nearest to ``query`` (vectors of ``model`` only), best first."""
        ...

    def invalidate(self, owner_id: str) -> None:
        """Drop anything this process caches for the owner."""
        ...
