"""Which embedding model's vectors searches read (the *active* model), and which models the indexer
writes: the active one, and a running reindex's target too.

The answer lives in ``context_embedding_state`` (one row, migration 0015), read on every search and
every indexing batch (a primary-key lookup): every process sharing the database switches in the
same instant, when a reindex's last statement commits, and no process can rank the query of one
model against vectors of another. The configured ``default_embed_model`` is only where a store
starts: changing it changes nothing until ``trellis context reindex`` has embedded every context
with it (see ``trellis.context.index.reindex``).
"""

from __future__ import annotations

from dataclasses import dataclass

from trellis.context.index import repository as repo
from trellis.gateway.service import Gateway
from trellis.kit.errors import TrellisError
from trellis.storage.database import Database


@dataclass(frozen=True, slots=True)
class Models:
    """The active model (None: no embedding model at all) and a running reindex's target, if any."""

    active: str | None
    target: str | None = None

    @property
    def to_index(self) -> list[str]:
        """What a context written now gets vectors of: the active model, and the target while a
        reindex runs (so the switch finds it done)."""
        models = [self.active] if self.active else []
        if self.target and self.target != self.active:
            models.append(self.target)
        return models


class EmbeddingModels:
    def __init__(self, database: Database, gateway: Gateway) -> None:
        self._database = database
        self._gateway = gateway

    def configured(self) -> str | None:
        """The configured default embedding model's canonical name, or None when it does not resolve."""
        try:
            name, _ = self._gateway.resolve(None, "embed")
        except TrellisError:
            return None
        return name

    async def current(self) -> Models:
        """The active model (pinned on first use) and the running reindex's target."""
        async with self._database.reader() as session:
            row = await repo.read_state(session)
        if row is not None and row.active_model is not None:
            return Models(row.active_model, row.target_model if row.status == repo.RUNNING else None)
        return Models(await self._pin(), None)

    async def active(self) -> str | None:
        return (await self.current()).active

    async def _pin(self) -> str | None:
        """First use of a store: the model most stored vectors have, else the configured default."""
        async with self._database.transaction() as session:
            chosen = await repo.most_common_model(session) or self.configured()
            if chosen is None:
                return None
            return await repo.pin_active_model(session, chosen) or chosen
