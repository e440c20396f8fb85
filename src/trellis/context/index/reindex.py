"""Changing the embedding model safely: the reindex (``POST /api/context/reindex``,
``trellis context reindex``).

A reindex re-embeds every context with a *target* model beside the vectors of the *active* one
(``context_embeddings`` holds a vector per context and model, migration 0015). Until it completes,
searches embed their query with the active model and rank only its vectors; the indexer gives every
context written meanwhile vectors of both models. When every context has a current vector of the
target model, one statement makes it the active model (and ends the job), then the embedding epoch
moves, so every process's next search uses it (``trellis.context.index.state``); the old model's
vectors are deleted after. Two models' vectors are never in one
ranking, and no search sees a half-embedded store.

Starting (``start``, admins only): the model must exist in the gateway and be able to embed (400
naming it otherwise), and one embedding call is made with it first, so a model that is configured
but cannot answer (no weights, a dead upstream) is refused before anything starts. Starting while a
reindex runs is a 409: the job lives in ``context_embedding_state`` (one row), and starting is a
compare-and-set on its status, so two replicas asked at once cannot both start one.

Working (``work``, the background task of every ``trellis serve``, or ``trellis context reindex
--wait``): a process claims the job with a lease (``lease_seconds``), walks the contexts in id order
in batches of ``batch_size`` from its ``cursor``, embeds those lacking a current target vector (one
gateway call per owner in the batch, on the ``indexer`` door, as the owner), and after each batch
stores the cursor and progress and renews the lease in one conditional update: a process that lost
its lease (it was too slow and another took over) stops there. A process killed mid-job leaves its
lease to expire; then any other (or the restarted one) claims it and goes on from the cursor. What
a killed process had embedded is kept (each batch's vectors commit on their own, before the cursor
moves), so nothing is embedded twice but the one batch in flight, and even that one's vectors are
skipped if they were stored. At the end of the walk, contexts written meanwhile whose target vector
is missing (an embedding that failed) are embedded, and the switch checks, in its own transaction,
that none is left. An embedding failure fails the job (``status: failed``, with the error); starting
it again resumes: done contexts are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from trellis.auth.schemas import Principal
from trellis.context.index import repository as repo
from trellis.context.index.repository import RUNNING
from trellis.context.index.schemas import ReindexOut
from trellis.context.index.service import GatewayIndexer
from trellis.context.index.state import EmbeddingModels
from trellis.episodic.schemas import Door
from trellis.gateway.service import CallContext, Gateway
from trellis.kit.clock import Clock
from trellis.kit.errors import Conflict, NotFound, PermissionDenied, TrellisError, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.logging import get_logger
from trellis.storage.database import Database

log = get_logger(__name__)

DEFAULT_BATCH_SIZE = 64
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_POLL_SECONDS = 15.0
PROBE_TEXT = "Trellis checks that this model can embed before reindexing with it."

Progress = Callable[[ReindexOut], None]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class _Job:
    job_id: str
    target: str
    cursor: str


class Reindexer:
    def __init__(
        self,
        database: Database,
        gateway: Gateway,
        indexer: GatewayIndexer,
        clock: Clock,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        worker_id: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._database = database
        self._gateway = gateway
        self._indexer = indexer
        self._models: EmbeddingModels = indexer.models
        self._clock = clock
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self.worker_id = worker_id or new_worker_id()
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._stopping = False
        self._holding = False  # this process may hold the job's lease (claimed, not yet ended)

    # --- the doors' operations --------------------------------------------------------------------

    async def status(self, actor: Principal) -> ReindexOut:
        """The active model and the reindex's progress (admins only)."""
        if not actor.is_admin:
            raise PermissionDenied("Only admins can see the context store's reindex")
        return await self.current()

    async def current(self) -> ReindexOut:
        models = await self._models.current()
        async with self._database.reader() as session:
            return ReindexOut.of(await repo.read_state(session), active=models.active)

    async def start(self, actor: Principal, model: str | None, *, door: Door = "rest") -> ReindexOut:
        """Start re-embedding every context with ``model`` (the configured default when None)."""
        if not actor.is_admin:
            raise PermissionDenied("Only admins can reindex the context store")
        target = self._embedding_model(model)
        await self._probe(actor, target, door)
        await self._models.current()  # pins the active model on a store that has none yet
        now = self._clock.now()
        async with self._database.transaction() as session:
            total = await repo.count_contexts(session)
            started = await repo.start_job(
                session, job_id=new_id("rdx"), target=target, requested_by=actor.user_id, total=total, now=now
            )
        if not started:
            running = await self.current()
            raise Conflict(
                f"A reindex to {running.target_model!r} is already running "
                f"({running.done} of {running.total} contexts); wait for it to finish",
                details={"job_id": running.job_id, "target_model": running.target_model},
            )
        await self._models.changed()  # every process's indexer now writes the target's vectors too
        log.info("context_reindex_started", model=target, contexts=total, by=actor.user_id)
        self.wake()
        return await self.current()

    def _embedding_model(self, model: str | None) -> str:
        """The canonical name of ``model``, or a 400 naming it when it is unknown or cannot embed."""
        try:
            canonical, _ = self._gateway.resolve(model, "embed")
        except NotFound as exc:
            name = str(exc.details.get("model", model))
            raise ValidationFailed.of(
                "model",
                f"unknown model {name!r}",
                type="unknown_model",
                summary=f"Model {name!r} does not exist",
                available=exc.details.get("available", []),
            ) from None
        except ValidationFailed as exc:
            raise ValidationFailed.of(
                "model",
                "cannot embed",
                type="model_capability",
                summary=f"{exc.message}: it cannot reindex the context store",
                capabilities=exc.details.get("capabilities", []),
            ) from None
        return canonical

    async def _probe(self, actor: Principal, model: str, door: Door) -> None:
        ctx = CallContext(principal=actor, door=door, cache="bypass")
        try:
            _, result = await self._gateway.embed(ctx, model, [PROBE_TEXT])
            if len(result.vectors) != 1 or not len(result.vectors[0]):
                raise TrellisError("it returned no vector")
        except TrellisError as exc:
            raise ValidationFailed.of(
                "model",
                f"cannot embed: {exc.message}",
                type="model_unavailable",
                summary=f"Model {model!r} cannot embed: {exc.message}",
            ) from None

    # --- working the job ---------------------------------------------------------------------------

    async def work(self, *, max_batches: int | None = None, on_progress: Progress | None = None) -> bool:
        """Claim the running reindex (unless a live process holds it) and work it until it completes,
        fails or is lost, or ``max_batches`` batches are done (the lease is then kept, as by a process
        that was killed). Returns whether there was a job to claim."""
        job = await self._claim()
        if job is None:
            return False
        log.info("context_reindex_claimed", model=job.target, cursor=job.cursor, worker=self.worker_id)
        batches = 0
        finishing = False  # the walk is over: embedding what was written meanwhile, then switching
        while True:
            if max_batches is not None and batches >= max_batches:
                return True
            async with self._database.reader() as session:
                rows = await repo.lacking_after(session, job.target, "" if finishing else job.cursor, self.batch_size)
            if not rows and not finishing:
                finishing = True
                continue
            if not rows:
                switched = await self._switch(job)
                if switched is None:  # a context lost its target vector meanwhile: go again
                    continue
                if switched and on_progress is not None:
                    on_progress(await self.current())
                return True
            failure = await self._embed(job.target, rows)
            if failure is not None:
                await self._fail(job, failure)
                if on_progress is not None:
                    on_progress(await self.current())
                return True
            batches += 1
            if not finishing:
                job.cursor = max(job.cursor, rows[-1][1])
            if not await self._advance(job):
                log.warning("context_reindex_lease_lost", worker=self.worker_id)
                return True
            if on_progress is not None:
                on_progress(await self.current())

    async def _embed(self, target: str, rows: list[tuple[str, str]]) -> str | None:
        """Embed a batch with the target model, one gateway call per owner. Returns an error or None."""
        by_owner: dict[str, list[str]] = {}
        for owner_id, context_id in rows:
            by_owner.setdefault(owner_id, []).append(context_id)
        for owner_id, ids in by_owner.items():
            if await self._indexer.embed_for(owner_id, ids, target) < 0:
                return self._indexer.last_error or "the embedding model failed"
        return None

    async def _claim(self) -> _Job | None:
        now = self._clock.now().timestamp()
        async with self._database.transaction() as session:
            row = await repo.read_state(session)
            if row is None or row.status != RUNNING or row.target_model is None or row.job_id is None:
                return None
            held = row.lease_owner not in (None, self.worker_id) and (row.lease_expires_at or 0.0) > now
            if held:
                return None
            claimed = await repo.claim_lease(
                session,
                job_id=row.job_id,
                held_by=row.lease_owner,
                worker_id=self.worker_id,
                expires_at=now + self.lease_seconds,
            )
            if not claimed:
                return None
            self._holding = True
            return _Job(row.job_id, row.target_model, row.cursor or "")

    async def _advance(self, job: _Job) -> bool:
        """Store the cursor and progress, renewing the lease; False when this process lost the job."""
        now = self._clock.now()
        expires_at = now.timestamp() + self.lease_seconds
        async with self._database.transaction() as session:
            return await repo.advance_job(session, job.job_id, self.worker_id, job.cursor, now, expires_at)

    async def _switch(self, job: _Job) -> bool | None:
        """Make the target the active model, in one transaction that also checks no context lacks a
        current target vector. None: one does (go again); False: the job was lost."""
        now = self._clock.now()
        async with self._database.transaction() as session:
            if await repo.lacking_after(session, job.target, "", 1):
                return None
            total = await repo.count_contexts(session)
            switched = await repo.finish_job(
                session, job_id=job.job_id, worker_id=self.worker_id, target=job.target, total=total, now=now
            )
            if not switched:
                return False
        await self._models.changed()  # every process's searches now use the target
        removed = await repo.delete_other_models(self._database, job.target)
        log.info("context_reindex_done", model=job.target, contexts=total, old_vectors_removed=removed)
        return True

    async def _fail(self, job: _Job, error: str) -> None:
        now = self._clock.now()
        async with self._database.transaction() as session:
            await repo.fail_job(session, job_id=job.job_id, worker_id=self.worker_id, error=error, now=now)
        await self._models.changed()
        log.warning("context_reindex_failed", model=job.target, error=error)

    async def release(self) -> None:
        """Give the lease back (a clean stop), so another process resumes at once."""
        if not self._holding:
            return
        self._holding = False
        async with self._database.transaction() as session:
            await repo.release_lease(session, self.worker_id)

    # --- the background task -----------------------------------------------------------------------

    def start_worker(self) -> None:
        """Start the background task (call from a running event loop): it looks for a job now, when
        woken (a reindex started in this process) and every ``poll_seconds``."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._wakeup, self._idle), name="context-reindexer"
        )

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until the background task has no running reindex left to work (tests). Without a task,
        works the job in this task instead."""
        while True:
            task, idle = self._task, self._idle
            if task is None or task.done() or idle is None:
                await self.work()
                return
            idle.clear()
            self.wake()
            await idle.wait()
            state = await self.current()
            if state.status != RUNNING:
                return

    async def stop(self) -> None:
        """Stop the task, mid-batch if need be (what is stored stays), and give the lease back."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self.release()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("context_reindex_release_failed", error=str(exc))

    async def _run(self, wakeup: asyncio.Event, idle: asyncio.Event) -> None:
        while not self._stopping:
            wakeup.clear()
            try:
                await self.work()
            except (SQLAlchemyError, OSError) as exc:  # e.g. not migrated yet, or the database is away
                log.warning("context_reindex_error", error=str(exc))
            idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=self._poll_seconds)
