"""Which embedding model's vectors searches read (the *active* model), and which models the indexer
writes: the active one, and a running reindex's target too.

The answer lives in ``context_embedding_state`` (one row, migration 0015). A process keeps what it
read in memory, tagged with an *embedding epoch* read just before the row, the way the credential
cache does (``trellis.auth.cache`` explains the epochs: a Redis counter, a file beside the SQLite
database, or PostgreSQL ``LISTEN``/``NOTIFY``): every change to the row that changes the answer (a
reindex starting, switching, failing) commits and then moves the epoch, and an answer read under
another epoch is not used. So a warm search costs no read of the row (at most an epoch read: a file
or a Redis ``GET``, nothing on PostgreSQL), and every process sharing the database sees a switch
once the epoch has moved: at once in the process that switched, milliseconds later in the others
(a ``NOTIFY``'s flight). Where no epoch is shared (an in-memory database, PostgreSQL with
``auth_cache_listen`` off) nothing is cached and the row is read every time; an entry lives at
most ``CACHE_TTL_SECONDS`` whatever happens (an epoch that failed to move). Searches rank only
vectors of the model they embedded the query with, so a process that is a moment late ranks the
old model's vectors, never a mix. The configured ``default_embed_model`` is only where a store
starts: changing it changes nothing until ``trellis context reindex`` has embedded every context
with it (see ``trellis.context.index.reindex``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from trellis.context.index import repository as repo
from trellis.gateway.service import Gateway
from trellis.kit.clock import Clock, SystemClock
from trellis.kit.errors import TrellisError
from trellis.storage.database import Database

CACHE_TTL_SECONDS = 60.0


class ModelsEpoch(Protocol):
    """Where processes sharing the database learn that the embedding state changed (the runtime
    gives one of the epochs of ``trellis.auth.cache``, on a key of its own)."""

    async def current(self) -> str | None:
        """The current epoch, or None when it cannot be known (then nothing cached is used)."""
        ...

    async def bump(self) -> None:
        """Move the epoch; call after the change has committed."""
        ...

    async def aclose(self) -> None: ...


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


@dataclass(frozen=True, slots=True)
class _Cached:
    models: Models
    epoch: str
    loaded_at: float


class EmbeddingModels:
    def __init__(
        self,
        database: Database,
        gateway: Gateway,
        *,
        epoch: ModelsEpoch | None = None,
        clock: Clock | None = None,
        ttl_seconds: float = CACHE_TTL_SECONDS,
    ) -> None:
        """Without ``epoch`` nothing is cached: the row is read on every call."""
        self._database = database
        self._gateway = gateway
        self._epoch = epoch
        self._clock = clock or SystemClock()
        self._ttl = ttl_seconds
        self._cached: _Cached | None = None

    def configured(self) -> str | None:
        """The configured default embedding model's canonical name, or None when it does not resolve."""
        try:
            name, _ = self._gateway.resolve(None, "embed")
        except TrellisError:
            return None
        return name

    async def current(self) -> Models:
        """The active model (pinned on first use) and the running reindex's target."""
        # The epoch is read before the row: a change committed in between moves it, and what is
        # read now is not used after.
        epoch = None if self._epoch is None else await self._epoch.current()
        cached = self._cached
        if (
            cached is not None
            and epoch is not None
            and cached.epoch == epoch
            and self._clock.monotonic() - cached.loaded_at <= self._ttl
        ):
            return cached.models
        models = await self._read()
        if epoch is not None and models.active is not None:
            self._cached = _Cached(models, epoch, self._clock.monotonic())
        return models

    @property
    def epoch(self) -> ModelsEpoch | None:
        return self._epoch

    async def changed(self) -> None:
        """Call after a change to the embedding state has committed (a reindex started, switched or
        failed): this process forgets its answer and every other one learns through the epoch."""
        self._cached = None
        if self._epoch is not None:
            await self._epoch.bump()

    async def aclose(self) -> None:
        """Release what the epoch holds open (a listening connection)."""
        self._cached = None
        if self._epoch is not None:
            await self._epoch.aclose()

    async def _read(self) -> Models:
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
