"""The worker: runs due workflow runs in this process, whether it is `trellis serve` (the embedded
pool) or a `trellis worker` process fed by a task queue.

Work arrives two ways. A nudge (a run id) from the work queue starts a new run at once; a poll of
the database every ``poll_seconds`` finds everything else that is due — woken waits, retries whose
backoff passed, runs whose worker died (their lease expired, or on PostgreSQL the worker's liveness
lock went with its connection: ``liveness``; this is the reaper) and nudges a broker lost. Either
way the claim in the database decides who runs it, so duplicates are harmless.

While runs execute, a heartbeat renews their leases every third of the lease; a run whose lease
could not be renewed (another worker took it over) is stopped without writing. A cancel check
stops runs whose cancel flag was set (in this process the service tells the worker at once).
``stop`` finishes or hands back what is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from trellis.kit.clock import Clock
from trellis.settings import WorkflowSettings
from trellis.storage.database import Database
from trellis.workflows import repository as repo
from trellis.workflows.engine import Engine, RunExecution, StopReason
from trellis.workflows.liveness import WorkerLiveness
from trellis.workflows.models import WorkflowRun

log = structlog.get_logger(__name__)

ENDED = frozenset(repo.ENDED)
PURGE_EVERY_SECONDS = 3600.0
PURGE_BATCH = 500
WAKE_COALESCE_SECONDS = 0.05


def new_worker_id(*, live: bool = False) -> str:
    """``host:pid:random``, ending in ``:live`` for a worker that holds a liveness lock."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}{repo.LIVE_MARK if live else ''}"


class RunWaiters:
    """In-process notification of runs that ended, for ``execute`` with ``wait``: from this process's
    worker, or from the run-end signal of a worker elsewhere (PostgreSQL, ``ended.py``). Either hands
    over the run as it was written when it has it (None otherwise), so the waiter need not read it
    back."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[asyncio.Future[WorkflowRun | None]]] = {}

    def register(self, run_id: str) -> asyncio.Future[WorkflowRun | None]:
        future: asyncio.Future[WorkflowRun | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(future)
        return future

    def discard(self, run_id: str, future: asyncio.Future[WorkflowRun | None]) -> None:
        waiting = self._waiters.get(run_id)
        if waiting and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._waiters[run_id]

    def waiting(self, run_id: str) -> bool:
        return run_id in self._waiters

    def notify(self, run_id: str, run: WorkflowRun | None = None) -> None:
        for future in self._waiters.pop(run_id, []):
            if not future.done():
                future.set_result(run)


class WorkflowWorker:
    def __init__(
        self,
        engine: Engine,
        database: Database,
        clock: Clock,
        settings: WorkflowSettings,
        waiters: RunWaiters,
        *,
        liveness: WorkerLiveness | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.liveness = liveness
        self._liveness_taken: asyncio.Task[bool] | None = None
        self._next_release = float("-inf")
        self._suspects: dict[str, float] = {}  # live-marked owners whose lock was free: since when
        self._database = database
        self._clock = clock
        self._settings = settings
        self._waiters = waiters
        self._sleep = sleep
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._active: dict[str, tuple[asyncio.Task[str], RunExecution]] = {}
        self._pending: set[str] = set()  # nudged or polled, waiting for a slot
        self._handlers: dict[asyncio.Task[None], str] = {}  # handling a nudge or an adopted run: which
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._started = False
        self._poll_now = asyncio.Event()
        # A run this worker was asked for was not taken (a limit, no free slot): poll again as soon as
        # one of its runs ends. Otherwise an end frees nothing anyone waits for, and the poll of every
        # ``poll_seconds`` suffices (a poll per ended run was two reads per run).
        self._turned_away = False
        self._timers: set[asyncio.Task[None]] = set()

    @property
    def worker_id(self) -> str:
        return self.engine.worker_id

    @property
    def active(self) -> set[str]:
        return set(self._active)

    @property
    def started(self) -> bool:
        return self._started and not self._stopping

    def room(self) -> int:
        """How many more runs this worker would take now (0 unless started)."""
        if not self.started:
            return 0
        return max(0, self._settings.worker_concurrency - len(self._active) - len(self._pending))

    def start(self) -> None:
        """Start the poll, heartbeat and cancel-check loops (from a running event loop)."""
        self._started = True
        if self.liveness is not None:
            # Claims wait for it (``_alive``): a run claimed under an id whose lock is not held yet
            # would look like a dead worker's to the others.
            self._liveness_taken = asyncio.create_task(self.liveness.ensure(), name="wf-liveness")
        self._loops = [
            asyncio.create_task(
                self._every(self._settings.poll_seconds, self.poll, wake=self._poll_now), name="wf-poll"
            ),
            asyncio.create_task(self._every(self._settings.lease_seconds / 3, self.heartbeat), name="wf-heartbeat"),
            asyncio.create_task(self._every(self._settings.cancel_check_seconds, self.check_cancels), name="wf-cancel"),
            asyncio.create_task(self._every(PURGE_EVERY_SECONDS, self.purge), name="wf-purge"),
        ]

    async def _every(
        self, seconds: float, action: Callable[[], Awaitable[object]], *, wake: asyncio.Event | None = None
    ) -> None:
        while not self._stopping:
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a database blip must not end the loop
                log.warning("workflow.worker_loop_error", action=action.__name__, error=repr(exc))
            if wake is None:
                await self._sleep(seconds)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await wake.wait()
                if wake.is_set():
                    # Woken (a run ended, a lease runs out): wake-ups during the next moment join
                    # this one, so a busy worker polls a few times a second, not once per run.
                    await self._sleep(WAKE_COALESCE_SECONDS)
                wake.clear()

    # -- taking work ---------------------------------------------------------------------------------

    async def handle(self, run_id: str) -> None:
        """A nudge: try to claim the run and drive it. Returns when this worker lets go of it."""
        if self._stopping or run_id in self._active or run_id in self._pending:
            return
        self._pending.add(run_id)
        try:
            async with self._slots:
                self._pending.discard(run_id)
                await self._alive()
                if self._stopping:
                    return
                execution = await self.engine.claim(run_id)
                if execution is None:
                    self._turned_away = True
                    return
                await self._drive(execution)
        finally:
            self._pending.discard(run_id)

    def adopt(self, execution: RunExecution) -> None:
        """Drive a run the service created already claimed for this worker (the embedded fast path:
        no nudge, no claim transaction). The caller checked ``has_room``."""
        self._pending.add(execution.run_id)

        async def drive() -> None:
            try:
                async with self._slots:
                    self._pending.discard(execution.run_id)
                    await self._drive(execution)
            finally:
                self._pending.discard(execution.run_id)

        task = asyncio.create_task(drive(), name=f"workflow-adopt:{execution.run_id}")
        self._track(task, execution.run_id)

    async def _drive(self, execution: RunExecution) -> None:
        run_id = execution.run_id
        task = asyncio.create_task(execution.drive(), name=f"workflow-run:{run_id}")
        self._active[run_id] = (task, execution)
        metrics = self.engine.metrics
        metrics.active.inc()
        try:
            status = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                raise
            status = "running" if task.cancelled() else task.result()
        finally:
            self._active.pop(run_id, None)
            metrics.active.dec()
        if status == "lost":
            metrics.lost.inc()
        elif status in ENDED or status == "waiting":
            metrics.runs.labels(status).inc()
        if status in ENDED:
            self._waiters.notify(run_id, execution.run)
            if self._turned_away:  # a slot (and maybe the owner's concurrency) is free for it
                self._turned_away = False
                self._poll_now.set()
        elif execution.parked_until is not None:
            self._wake_at(run_id, execution.parked_until)

    def _poll_at(self, delay: float) -> None:
        if self._stopping:
            return

        async def poll_soon() -> None:
            await self._sleep(delay)
            self._poll_now.set()

        timer = asyncio.create_task(poll_soon(), name="workflow-poll-soon")
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    def _wake_at(self, run_id: str, moment: datetime) -> None:
        """A run parked until soon (a short wait, a retry's backoff) is taken again on time, not at
        the next poll. Later ones are left to the poll."""
        delay = (moment - self._clock.now()).total_seconds()
        if self._stopping or delay > 60 * self._settings.poll_seconds:
            return

        async def wake() -> None:
            await self._sleep(max(0.0, delay))
            self.spawn(run_id)

        timer = asyncio.create_task(wake(), name=f"workflow-wake:{run_id}")
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    def spawn(self, run_id: str) -> None:
        """Handle a run in the background (the poll, and the embedded queue's consumer)."""
        task = asyncio.create_task(self.handle(run_id), name=f"workflow-nudge:{run_id}")
        self._track(task, run_id)

    def _track(self, task: asyncio.Task[None], run_id: str) -> None:
        self._handlers[task] = run_id
        task.add_done_callback(lambda done: self._handlers.pop(done, None))

    async def _alive(self) -> None:
        """Until the liveness lock was first tried for (whatever came of it)."""
        if self._liveness_taken is not None and not self._liveness_taken.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._liveness_taken)

    async def release_dead(self) -> dict[str, int]:
        """PostgreSQL with liveness: make the runs of workers that died due now, at most once per
        ``poll_seconds`` (a busy worker polls more often); {dead worker: runs released}.

        A worker is judged dead when its lock was free at two looks at least ``poll_seconds`` apart,
        not at the first: a live worker whose connection dropped (a database restart) takes its lock
        back at its next poll, and its runs are not restarted elsewhere meanwhile."""
        if self.liveness is None or self._clock.monotonic() < self._next_release:
            return {}
        moment = self._clock.monotonic()
        self._next_release = moment + self._settings.poll_seconds
        await self._alive()
        now = self._clock.now()
        async with self._database.transaction() as session:
            free = await repo.free_live_owners(session, self.worker_id, now)
            self._suspects = {owner: self._suspects.get(owner, moment) for owner in free}
            dead = [owner for owner, since in self._suspects.items() if moment - since >= self._settings.poll_seconds]
            released = await repo.release_runs_of(session, dead, now) if dead else {}
        for owner, count in released.items():
            self._suspects.pop(owner, None)
            log.warning("workflow.worker_gone", worker=owner, runs=count, seen_by=self.worker_id)
        return released

    async def poll(self) -> int:
        """Start every due run this worker has room for; returns how many were started."""
        if self.liveness is not None and not self._stopping:
            await self.liveness.ensure()  # taken again after a lost connection, even when this worker is full
        free = self._settings.worker_concurrency - len(self._active) - len(self._pending)
        if free <= 0 or self._stopping:
            self._turned_away = True
            return 0
        await self.release_dead()
        now = self._clock.now()
        nudged_after = None
        if self._settings.queue_url is not None:
            nudged_after = now - timedelta(seconds=self._settings.nudge_grace_seconds)
        async with self._database.reader() as session:
            due = await repo.due_runs(session, now, free * 2, nudged_after=nudged_after)
            upcoming = None if due else await repo.next_due(session)
        if len(due) >= free * 2:
            self._turned_away = True  # there may be more than it fetched
        if upcoming is not None:
            # A lease running out (a dead worker's run) or a wait ending before the next poll: poll
            # then, so a run is taken over as its lease ends, not up to a poll later.
            delay = (upcoming - now).total_seconds()
            if 0 < delay < self._settings.poll_seconds:
                self._poll_at(delay)
        started = 0
        for run_id in due:
            if run_id not in self._active and run_id not in self._pending:
                self.spawn(run_id)
                started += 1
        return started

    async def settled(self) -> None:
        """Wait until every run this worker was asked to take is running here or was let go (its
        claim refused, or it ended or parked): no claim of this worker is still in flight."""
        while True:
            deciding = [task for task, run_id in self._handlers.items() if run_id not in self._active]
            if not deciding:
                return
            await asyncio.wait(deciding, timeout=0.01, return_when=asyncio.FIRST_COMPLETED)

    async def drain(self) -> None:
        """Burst mode (tests, one-shot commands): run due work until none is left or running."""
        while True:
            await self.poll()
            busy = [task for task in self._handlers if not task.done()]
            if not busy:
                return
            await asyncio.wait(busy)

    # -- keeping and stopping work -------------------------------------------------------------------

    async def purge(self) -> int:
        """Delete runs that ended more than ``retention_days`` ago, with their steps and events, a
        batch at a time (any worker may do it; several doing it at once is harmless)."""
        cutoff = self._clock.now() - timedelta(days=self._settings.retention_days)
        deleted = 0
        while not self._stopping:
            async with self._database.transaction() as session:
                count = await repo.delete_ended_before(session, cutoff, PURGE_BATCH)
            deleted += count
            if count < PURGE_BATCH:
                break
        return deleted

    async def heartbeat(self) -> None:
        held = {run_id: execution.epoch for run_id, (_, execution) in self._active.items()}
        if not held:
            return
        now = self._clock.now()
        async with self._database.transaction() as session:
            lost = await repo.renew(
                session, self.worker_id, held, now, now + timedelta(seconds=self._settings.lease_seconds)
            )
        for run_id in lost:
            self._stop(run_id, StopReason.LEASE_LOST)

    async def check_cancels(self) -> None:
        if not self._active:
            return
        async with self._database.reader() as session:
            cancelled = await repo.cancel_requested(session, list(self._active))
        for run_id in cancelled:
            self._stop(run_id, StopReason.CANCEL)

    def cancel_local(self, run_id: str) -> bool:
        """The service's fast path: stop a run this process executes. False if it is not here."""
        return self._stop(run_id, StopReason.CANCEL)

    def _stop(self, run_id: str, reason: StopReason) -> bool:
        found = self._active.get(run_id)
        if found is None:
            return False
        task, execution = found
        if execution.stop_reason is None:
            execution.stop_reason = reason
            task.cancel()
        return True

    async def stop(self) -> None:
        """Take no more work; give running runs ``shutdown_grace_seconds`` to finish, then hand the
        rest back to the database (due at once, for another worker)."""
        self._stopping = True
        for timer in list(self._timers):
            timer.cancel()
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        tasks = [task for task, _ in self._active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_seconds)
        for run_id in list(self._active):
            self._stop(run_id, StopReason.SHUTDOWN)
        remaining = [task for task, _ in self._active.values()] + list(self._handlers)
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)
        if self._liveness_taken is not None:
            self._liveness_taken.cancel()
            await asyncio.wait([self._liveness_taken])  # ended either way; its outcome does not matter now
        if self.liveness is not None:
            await self.liveness.aclose()  # everything was finished or handed back: nothing to release
