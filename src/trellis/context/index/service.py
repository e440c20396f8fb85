"""The real ``ContextIndexer``: embeds contexts through the gateway and stores their vectors.

``index()`` embeds now, in batches of ``batch_size``: it reads the contexts' current content, and
for each model to index — the *active* embedding model (``trellis.context.index.state``), and while
a reindex runs its target model too — skips those whose stored vector of that model was computed
from the same content (``content_hash``), embeds the rest, and hands the vectors to the vector
index, which refuses a vector whose content changed meanwhile. ``schedule()`` queues
ids for a background task (started and stopped with the app, like the log writer; ``stop()``
drains the queue). ``forget()`` drops what the index caches in memory for the owner; the rows
themselves go with the contexts (ON DELETE CASCADE).

The queue is an accelerator, not the record: the database says which contexts lack a current
vector of the active model (no row, or another ``content_hash``). ``sweep()`` finds them and queues them;
the background task sweeps when it starts and every ``sweep_interval_seconds`` while idle, so
contexts scheduled before a crash, or whose embedding failed (model down), are picked up without
anyone asking. Changing the configured model is not such a case: that is a reindex, which embeds
beside the old vectors and switches when done.

Embedding failures never reach the writer of a context: they are logged, counted, and left to the
sweep. Calls go through the gateway as the context's owner, on the door ``indexer``, so they show
in the owner's episodic log like any other model call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from trellis.auth.schemas import Principal
from trellis.context.index import repository as repo
from trellis.context.index.base import VectorEntry, VectorIndex
from trellis.context.index.state import EmbeddingModels
from trellis.gateway.service import CallContext, Gateway
from trellis.kit.clock import Clock
from trellis.kit.errors import TrellisError
from trellis.kit.logging import get_logger
from trellis.settings import Role
from trellis.storage.database import Database

log = get_logger(__name__)

DEFAULT_BATCH_SIZE = 64
DEFAULT_SWEEP_INTERVAL_SECONDS = 300.0
SWEEP_LIMIT = 10_000


def owner_principal(owner_id: str) -> Principal:
    """Who an indexing call is made for: the owner (for the episodic log and the cache scope only;
    the indexer has no credential and asks for nothing but embeddings)."""
    return Principal(user_id=owner_id, username=owner_id, role=Role.VIEWER, via="api_key", scopes=frozenset())


def _batches(ids: Sequence[str], size: int) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


@dataclass
class IndexerStats:
    embedded: int = 0  # contexts whose vector was written
    skipped: int = 0  # contexts whose vector was already current
    failures: int = 0  # batches that failed (left to the sweep)


class GatewayIndexer:
    def __init__(
        self,
        database: Database,
        gateway: Gateway,
        index: VectorIndex,
        clock: Clock,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        model: str | None = None,
        sweep_interval_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS,
        models: EmbeddingModels | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._database = database
        self._gateway = gateway
        self.index_backend = index
        self._clock = clock
        self._batch_size = batch_size
        self._model = model
        self.models = models or EmbeddingModels(database, gateway)
        self._sweep_interval = sweep_interval_seconds
        # owner -> ids in arrival order (a dict: ordered and deduplicated).
        self._pending: dict[str, dict[str, None]] = {}
        # (model, context id) -> done, for embeddings under way in this process: the inline index of a
        # write and the background sweep may reach one context at once, and it is embedded once.
        self._in_flight: dict[tuple[str, str], asyncio.Event] = {}
        # Events are made with the task, in its event loop (a runtime may outlive one loop: the CLI).
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._warned_no_model = False
        self.stats = IndexerStats()
        self.last_error: str | None = None

    # --- the ContextIndexer protocol ----------------------------------------------------------

    async def index(self, owner_id: str, context_ids: Sequence[str]) -> None:
        for batch in _batches(context_ids, self._batch_size):
            await self._index_batch(owner_id, batch)

    def schedule(self, owner_id: str, context_ids: Sequence[str]) -> None:
        if not context_ids:
            return
        pending = self._pending.setdefault(owner_id, {})
        pending.update(dict.fromkeys(context_ids))
        self._ensure_worker()
        if self._idle is not None and self._wakeup is not None:
            self._idle.clear()
            self._wakeup.set()

    async def forget(self, owner_id: str, context_ids: Sequence[str]) -> None:
        pending = self._pending.get(owner_id)
        if pending:
            for context_id in context_ids:
                pending.pop(context_id, None)
        self.index_backend.invalidate(owner_id)

    @property
    def backlog(self) -> int:
        """Contexts scheduled and not yet embedded (the metric history's ``index.backlog``)."""
        return sum(len(pending) for pending in self._pending.values())

    # --- the model --------------------------------------------------------------------------------

    def model_name(self) -> str | None:
        """The configured embedding model (its canonical name), or None if there is none. Vectors are
        written for the active model (``models_to_index``), which is this one until a reindex says
        otherwise, unless the indexer was made for one ``model``."""
        try:
            name, _ = self._gateway.resolve(self._model, "embed")
        except TrellisError as exc:
            if not self._warned_no_model:
                log.warning("context_indexing_off", reason=exc.message)
                self._warned_no_model = True
            return None
        return name

    # --- work ------------------------------------------------------------------------------------

    async def models_to_index(self) -> list[str]:
        """The models a context written now gets vectors of (see ``EmbeddingModels``)."""
        if self._model is not None:
            return [name for name in [self.model_name()] if name]
        models = await self.models.current()
        if models.active is None and not self._warned_no_model:
            self.model_name()  # logs why there is no model, once
        return models.to_index

    async def _index_batch(self, owner_id: str, context_ids: Sequence[str]) -> None:
        try:
            models = await self.models_to_index()
        except SQLAlchemyError as exc:  # e.g. not migrated yet: the sweep retries later
            self.stats.failures += 1
            log.warning("context_index_failed", owner_id=owner_id, contexts=len(context_ids), error=str(exc))
            return
        for model in models:
            await self.embed_for(owner_id, context_ids, model)

    async def embed_for(self, owner_id: str, context_ids: Sequence[str], model: str) -> int:
        """Store vectors of ``model`` for those of the owner's ``context_ids`` lacking a current one.
        Returns how many were written; failures are logged, counted and left to the sweep (or the
        reindex) to retry, and -1 is returned."""
        try:
            async with self._database.session() as session:
                contexts = await repo.contents(session, owner_id, context_ids)
                stored = await repo.stored_hashes(session, model, [c.id for c in contexts])
            stale = [c for c in contexts if stored.get(c.id) != c.content_hash]
            self.stats.skipped += len(contexts) - len(stale)
            elsewhere = [self._in_flight[(model, c.id)] for c in stale if (model, c.id) in self._in_flight]
            todo = [c for c in stale if (model, c.id) not in self._in_flight]
            if not todo:
                for done in elsewhere:  # another call is embedding them: its result is this call's
                    await done.wait()
                return 0
            # The vectors are stored here, keyed by content hash: caching them in the gateway too would
            # only push search queries out of its cache.
            ctx = CallContext(principal=owner_principal(owner_id), door="indexer", cache="bypass")
            mine = {(model, c.id): asyncio.Event() for c in todo}
            self._in_flight.update(mine)
            try:
                served, result = await self._gateway.embed(ctx, model, [c.text for c in todo])
                if len(result.vectors) != len(todo):
                    raise TrellisError(
                        f"the embedding model returned {len(result.vectors)} vectors for {len(todo)} texts"
                    )
                entries = [VectorEntry(c.id, c.content_hash, v) for c, v in zip(todo, result.vectors, strict=True)]
                await self.index_backend.upsert(owner_id, served, entries)
            finally:
                for key, done in mine.items():
                    self._in_flight.pop(key, None)
                    done.set()
            for done in elsewhere:
                await done.wait()
            self.stats.embedded += len(entries)
            return len(entries)
        except (TrellisError, SQLAlchemyError, OSError, ValueError) as exc:
            # The contexts are stored; keyword search finds them. The sweep retries later.
            self.stats.failures += 1
            self.last_error = getattr(exc, "message", None) or str(exc)
            log.warning(
                "context_index_failed", owner_id=owner_id, model=model, contexts=len(context_ids), error=self.last_error
            )
            return -1

    async def sweep(self, limit: int = SWEEP_LIMIT) -> int:
        """Queue every context (up to ``limit``) whose vector of the active model is missing or not
        current. Returns how many. (A running reindex's target model is the reindex's to fill.)"""
        models = await self.models_to_index()
        if not models:
            return 0
        async with self._database.session() as session:
            rows = await repo.missing_or_stale(session, models[0], limit)
        by_owner: dict[str, list[str]] = {}
        for owner_id, context_id in rows:
            by_owner.setdefault(owner_id, []).append(context_id)
        for owner_id, ids in by_owner.items():
            self.schedule(owner_id, ids)
        return len(rows)

    # --- the background task -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (call from a running event loop). It sweeps first."""
        self._stopping = False
        self._ensure_worker(sweep_first=True)

    async def stop(self) -> None:
        """Embed everything still queued, then stop the task."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        # Scheduled while no task ran (no event loop then): embed it now.
        await self._drain()

    async def wait_idle(self) -> None:
        """Until the queue is empty and nothing is being embedded (for tests and the CLI)."""
        if self._task is None or self._task.done() or self._idle is None:
            await self._drain()
            return
        await self._idle.wait()

    def _ensure_worker(self, *, sweep_first: bool = False) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (synchronous caller): start() or stop() will pick the work up
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._task = loop.create_task(self._run(self._wakeup, self._idle, sweep_first), name="context-indexer")

    async def _run(self, wakeup: asyncio.Event, idle: asyncio.Event, sweep_first: bool) -> None:
        if sweep_first:
            await self._sweep_quietly()
        while True:
            await self._drain()
            if self._stopping:
                idle.set()
                return
            wakeup.clear()
            if self._pending:
                continue
            idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=self._sweep_interval)
                continue
            await self._sweep_quietly()

    async def _sweep_quietly(self) -> None:
        try:
            found = await self.sweep()
        except (SQLAlchemyError, OSError) as exc:  # e.g. not migrated yet
            log.warning("context_index_sweep_failed", error=str(exc))
            return
        if found:
            log.info("context_index_sweep", contexts=found)

    async def _drain(self) -> None:
        while self._pending:
            owner_id = next(iter(self._pending))
            pending = self._pending[owner_id]
            batch = list(pending)[: self._batch_size]
            for context_id in batch:
                del pending[context_id]
            if not pending:
                del self._pending[owner_id]
            await self._index_batch(owner_id, batch)
