"""The interpreter: takes one due run, holds it with a lease and drives its steps until the run ends,
waits, or has to back off.

One claim covers a stretch of a run's life. At the claim, steps a lost worker left ``running`` are
counted as lost and run again (same attempt number, so the idempotency key a side effect carries
is the same and the far side can drop the repeat). Steps whose ``needs`` are done start together;
each completion is one transaction that records the step's outcome, marks the steps it made ready
as started (attempt + 1, so a retry budget survives a crash) and appends the events, all fenced by
the lease epoch: a worker that lost its lease writes nothing (``LeaseLost``) and stops.

When nothing more can start: the run ends (``output`` evaluated), fails, or is parked — waiting
for a time, a hook or a child run (``due_at`` says when a worker should look again), or running
with no holder until a retry's backoff passes. Cancellation and shutdown arrive as task
cancellation with a reason (``StopReason``): a cancelled run ends ``cancelled``; on shutdown the
run is handed back to the database (due now) for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import structlog
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from trellis.auth.schemas import Principal, Scope
from trellis.kit.clock import Clock
from trellis.settings import Role, WorkflowSettings
from trellis.storage.database import Database
from trellis.workflows import repository as repo
from trellis.workflows import templates
from trellis.workflows.definition import RetryPolicy, StepSpec, WorkflowDefinition
from trellis.workflows.ended import announce
from trellis.workflows.metrics import WorkflowMetrics
from trellis.workflows.models import WorkflowRun, WorkflowStep
from trellis.workflows.steps.base import StepContext, StepFailed, StepServices, StepType, Suspend
from trellis.workflows.steps.registry import MAP_STEP, StepRegistry

log = structlog.get_logger(__name__)
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

DONE = frozenset({"succeeded", "skipped", "failed"})  # "failed" counts as done only with on_error: continue
INLINE_BACKOFF_SECONDS = 5.0  # a retry waiting longer than this lets go of the run meanwhile
EVENT_OUTPUT_MAX_CHARS = 2_000


# Called after a commit with the events it wrote, each with its run's owner: (owner id, event row
# {run_id, seq, type, step, data, at}). Must not block or raise (the live-events publisher queues).
EventSink = Callable[[list[tuple[str, dict[str, Any]]]], None]


class StopReason(enum.Enum):
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


class LeaseLost(Exception):
    """Another worker holds the run now; this one must stop without writing."""


def principal_record(principal: Principal) -> dict[str, Any]:
    return {
        "user_id": principal.user_id,
        "username": principal.username,
        "role": principal.role.value,
        "via": principal.via,
        "scopes": sorted(scope.value for scope in principal.scopes),
        "key_id": principal.key_id,
    }


def principal_from_record(record: Mapping[str, Any]) -> Principal:
    return Principal(
        user_id=record["user_id"],
        username=record["username"],
        role=Role(record["role"]),
        via=record["via"],
        scopes=frozenset(Scope(value) for value in record["scopes"]),
        key_id=record.get("key_id"),
    )


def idempotency_key(run_id: str, step_key: str, attempt: int) -> str:
    return f"{run_id}:{step_key}:{attempt}"


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def _error(message: str, kind: str = "step_failed", **details: Any) -> dict[str, Any]:
    return {"message": message, "type": kind, **details}


def _brief(value: Any) -> Any:
    """An output as an event carries it: itself when small, else its size."""
    size = json_size(value)
    return value if size <= EVENT_OUTPUT_MAX_CHARS else {"omitted_bytes": size}


@dataclass
class StepState:
    key: str
    status: str = "pending"
    attempt: int = 0
    lost: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    suspend: dict[str, Any] | None = None
    resume: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def of(cls, row: WorkflowStep) -> StepState:
        return cls(
            row.key,
            row.status,
            row.attempt,
            row.lost,
            row.output,
            row.error,
            row.suspend,
            row.resume,
            row.started_at,
            row.finished_at,
        )

    def record(self) -> dict[str, Any]:
        values = {
            "key": self.key,
            "status": self.status,
            "attempt": self.attempt,
            "lost": self.lost,
            "output": self.output,
            "error": self.error,
            "suspend": self.suspend,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.status != "waiting":
            # A waiting step's ``resume`` is written by whoever wakes it (a hook, a child run's
            # end), possibly before this worker has recorded the wait: never overwrite it then.
            values["resume"] = self.resume
        return values


@dataclass
class Outcome:
    status: str  # succeeded | skipped | failed | suspended
    output: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = False
    suspend: Suspend | None = None


@dataclass
class Batch:
    """What one transaction of the engine writes."""

    steps: dict[str, StepState] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def event(self, kind: str, step: str | None = None, **data: Any) -> None:
        self.events.append({"type": kind, "step": step, "data": data})


class RunFinished(Exception):
    pass


class DefinitionCache:
    """Versions never change once written, so each is read from the database once per process."""

    def __init__(self, database: Database, registry: StepRegistry) -> None:
        self._database = database
        self._registry = registry
        self._cache: dict[tuple[str, int], WorkflowDefinition] = {}

    def put(self, workflow_id: str, version: int, definition: WorkflowDefinition) -> None:
        self._cache[(workflow_id, version)] = definition

    async def get(self, workflow_id: str, version: int) -> WorkflowDefinition:
        found = self._cache.get((workflow_id, version))
        if found is None:
            async with self._database.reader() as session:
                row = await repo.workflow_version(session, workflow_id, version)
            if row is None:
                raise LookupError(f"workflow {workflow_id} version {version} is missing")
            found = self._cache[(workflow_id, version)] = WorkflowDefinition.model_validate(row.definition)
        return found


@dataclass
class _Pending:
    execution: RunExecution
    batch: Batch


def _last_per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New step rows, one per key (the last state wins: a step inserted and changed in one group)."""
    return list({(row["run_id"], row["key"]): row for row in rows}.values())


class GroupCommit(Generic[ItemT, ResultT]):
    """Queues writes and commits them in groups, in order, one group at a time: while one group's
    transaction runs, the next gathers. ``write(items)`` returns one result (or exception) per item.

    Hand-written: what it batches are Trellis's own writes (the engine's fenced step writes, new
    runs); no library offers group commit over SQLAlchemy sessions. A caller cancelled while
    waiting does not undo its write: it lands, in order, before anything queued after it."""

    def __init__(
        self, write: Callable[[list[ItemT]], Awaitable[list[ResultT | BaseException]]], *, max_group: int = 256
    ) -> None:
        self._write = write
        self._max_group = max_group
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: ItemT) -> ResultT:
        result: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, result))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return await asyncio.shield(result)

    async def _flush(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self._max_group], self._queue[self._max_group :]
            try:
                outcomes = await self._write([item for item, _ in group])
            except Exception as exc:  # noqa: BLE001 - every waiter learns why its write failed
                outcomes = [exc] * len(group)
            for (_, result), outcome in zip(group, outcomes, strict=True):
                if result.done():
                    continue
                if isinstance(outcome, BaseException):
                    result.set_exception(outcome)
                    result.add_done_callback(_read_exception)  # a cancelled waiter never reads it
                else:
                    result.set_result(outcome)


def _read_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Engine:
    """Executes claimed runs for one worker (``worker_id`` is what leases name)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: WorkflowSettings,
        registry: StepRegistry,
        definitions: DefinitionCache,
        services: StepServices,
        *,
        worker_id: str,
        nudge: Callable[[str], Awaitable[None]],
        metrics: WorkflowMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_events: EventSink | None = None,
    ) -> None:
        self.metrics = metrics or WorkflowMetrics(CollectorRegistry())
        self.on_events = on_events
        self._database = database
        self._clock = clock
        self._settings = settings
        self._registry = registry
        self._definitions = definitions
        self._services = services
        self.worker_id = worker_id
        self._nudge = nudge
        self._sleep = sleep
        self._group: GroupCommit[_Pending, None] = GroupCommit(self.write_group)
        self._claims: GroupCommit[str, RunExecution | None] = GroupCommit(
            self.claim_group, max_group=repo.CLAIM_GROUP_MAX
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self._settings.lease_seconds)

    async def claim(self, run_id: str) -> RunExecution | None:
        """Take the run if it is due and within the limits; None if another worker has it (or a
        limit is reached). Claims made at the same moment share one transaction
        (``claim_group``)."""
        return await self._claims.submit(run_id)

    async def claim_group(self, run_ids: list[str]) -> list[RunExecution | BaseException | None]:
        """One transaction claims every run asked for (``repo.claim_many``); a first claim (epoch 1)
        knows its steps without reading them: all pending, as the run was created. The
        ``run.started`` (or ``run.resumed``) event is written with the run's first commit."""
        now = self._clock.now()
        async with self._database.transaction() as session:
            claimed = await repo.claim_many(
                session,
                list(dict.fromkeys(run_ids)),
                worker=self.worker_id,
                now=now,
                lease_until=now + self.lease,
                max_per_user=self._settings.max_running_per_user,
                max_total=self._settings.max_running_total,
            )
            resumed = await repo.steps_of_runs(session, [run.id for run in claimed if run.lease_epoch > 1])
        executions: dict[str, RunExecution] = {}
        for run in claimed:
            definition = await self._definitions.get(run.workflow_id, run.version)
            if run.id in resumed:
                states = {row.key: StepState.of(row) for row in resumed[run.id]}
            else:
                states = {spec.id: StepState(spec.id) for spec in definition.scheduled()}
            execution = RunExecution(self, run, run.lease_epoch, definition, states)
            execution.opening = "run.started" if run.lease_epoch == 1 else "run.resumed"
            executions[run.id] = execution
        # A run asked for twice in one group is given once.
        return [executions.pop(run_id, None) for run_id in run_ids]

    def adopt(self, run: WorkflowRun, definition: WorkflowDefinition, steps: list[StepState]) -> RunExecution:
        """The execution of a run created already claimed by this worker (epoch 1)."""
        return RunExecution(self, run, run.lease_epoch, definition, {step.key: step for step in steps})

    async def commit(self, execution: RunExecution, batch: Batch) -> None:
        """Write ``batch`` fenced by the run's lease; ``LeaseLost`` if the run is no longer ours.

        Writes of every run this worker executes go through one group commit (``GroupCommit``): one
        transaction takes whatever is waiting, so a busy worker writes many runs' steps and events
        in a handful of statements instead of a transaction each. A caller cancelled while waiting
        does not undo its write: it lands, in order, before anything queued after it."""
        await self._group.submit(_Pending(execution, batch))

    async def write_group(self, items: list[_Pending]) -> list[BaseException | None]:
        now = self._clock.now()
        async with self._database.transaction() as session:
            held = await repo.fence_many(
                session, [(i.execution.run_id, i.execution.epoch, len(i.batch.events)) for i in items], now
            )
            next_seq = dict(held)
            runs: list[dict[str, Any]] = []
            existing: list[dict[str, Any]] = []
            fresh: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            written: dict[str, set[str]] = {}
            for item in items:
                execution, batch = item.execution, item.batch
                run_id = execution.run_id
                if run_id not in held:
                    continue
                if batch.run:
                    runs.append({"id": run_id, **batch.run})
                done = written.setdefault(run_id, set(execution.persisted))
                for state in batch.steps.values():
                    row = {"run_id": run_id, **state.record()}
                    (existing if state.key in done else fresh).append(row)
                    done.add(state.key)
                for event in batch.events:
                    events.append({"run_id": run_id, "seq": next_seq[run_id], "at": now, **event})
                    next_seq[run_id] += 1
                if batch.run.get("status") in repo.ENDED and execution.run.parent_run_id:
                    await self._resume_parent(session, execution, batch.run, now)
            await repo.update_runs(session, runs)
            # An update and an insert of one key in the same group: insert first, then update.
            await repo.write_steps(session, [], _last_per_key(fresh))
            await repo.write_steps(session, existing, [])
            await repo.insert_events(session, events)
            # The runs as written (``_end`` applied the batch to ``execution.run``; the fence set
            # these two): a waiter anywhere answers from them without reading the run back.
            ended = [
                item.execution.run
                for item in items
                if item.execution.run_id in held and item.batch.run.get("status") in repo.ENDED
            ]
            for run in ended:
                run.updated_at, run.event_seq = now, next_seq[run.id] - 1
            await announce(session, ended)
        if self.on_events is not None and events:
            owners = {item.execution.run_id: item.execution.run.owner_id for item in items}
            self.on_events([(owners[event["run_id"]], event) for event in events])
        outcomes: list[BaseException | None] = []
        for item in items:
            if item.execution.run_id in held:
                item.execution.persisted.update(item.batch.steps)
                outcomes.append(None)
            else:
                outcomes.append(LeaseLost(item.execution.run_id))
        return outcomes

    async def _resume_parent(
        self, session: Any, execution: RunExecution, ended: Mapping[str, Any], now: datetime
    ) -> None:
        run = execution.run
        assert run.parent_run_id is not None
        assert run.parent_step is not None
        if ended["status"] == "succeeded":
            payload: dict[str, Any] = {"output": ended.get("result"), "child_run_id": run.id}
        else:
            error = ended.get("error") or {}
            payload = {
                "error": _error(
                    f"sub-workflow {run.workflow_name!r} {ended['status']}: {error.get('message', '')}".rstrip(": "),
                    "child_failed",
                    child_run_id=run.id,
                )
            }
        await repo.set_resume(session, run.parent_run_id, run.parent_step, payload)
        await repo.wake(session, run.parent_run_id, now)
        execution.wake_after_commit.append(run.parent_run_id)

    async def recheck_waiting(self, execution: RunExecution) -> None:
        """A run just parked as waiting: if a child ended or a hook arrived while this worker was
        still running it (its wake found the run not yet waiting), make it due now."""
        async with self._database.transaction() as session:
            if await repo.has_resumed_step(session, execution.run_id):
                await repo.wake(session, execution.run_id, self._clock.now())
                execution.wake_after_commit.append(execution.run_id)
        await self.after_commit(execution)

    async def after_commit(self, execution: RunExecution) -> None:
        for run_id in execution.wake_after_commit:
            await self._nudge(run_id)
        execution.wake_after_commit.clear()


class RunExecution:
    """One claimed stretch of a run."""

    def __init__(
        self,
        engine: Engine,
        run: WorkflowRun,
        epoch: int,
        definition: WorkflowDefinition,
        states: dict[str, StepState],
    ) -> None:
        self.engine = engine
        self.run = run
        self.run_id = run.id
        self.epoch = epoch
        self.definition = definition
        self.states = states
        self.persisted: set[str] = set(states)
        self.needs = definition.needs_of()
        self.scheduled = [spec.id for spec in definition.scheduled()]
        self.owner = principal_from_record(run.principal)
        self.tasks: dict[asyncio.Task[Outcome], str] = {}
        self.stop_reason: StopReason | None = None
        self.wake_after_commit: list[str] = []
        # The event a claim opens the run's first commit with (run.started / run.resumed); None when
        # the run was created already started (adopted).
        self.opening: str | None = None
        self._relaunch: list[str] = []
        # When this worker let go of a parked run: when it is due again (None: ended, or no timer).
        self.parked_until: datetime | None = None
        self._settings = engine._settings
        self._clock = engine._clock

    # -- the loop ------------------------------------------------------------------------------------

    async def drive(self) -> str:
        """Run until the run ends or parks; returns the run's status when this worker lets go
        (``lost`` if another worker took it over)."""
        try:
            batch = Batch()
            if self.opening is not None:
                batch.event(self.opening, None, worker=self.engine.worker_id, epoch=self.epoch)
            self._recover_lost(batch)
            launch = self._check_waiting(batch)
            status = await self._step_forward(batch, launch)
            while status is None:
                done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                batch = Batch()
                launch = []
                for task in done:
                    key = self.tasks.pop(task)
                    launch += self._apply(key, task.result(), batch)
                status = await self._step_forward(batch, launch)
            return status
        except asyncio.CancelledError:
            self._cancel_tasks()
            if self.stop_reason is StopReason.CANCEL:
                await asyncio.shield(self._cancelled())
                return "cancelled"
            if self.stop_reason is StopReason.SHUTDOWN:
                await asyncio.shield(self._hand_back())
                return "running"
            raise
        except LeaseLost:
            self._cancel_tasks()
            log.warning("workflow.lease_lost", run_id=self.run_id, worker=self.engine.worker_id)
            return "lost"
        except Exception as exc:  # noqa: BLE001 - the database went away, most likely
            # Nothing more can be recorded: stop the steps and let go. The lease runs out and a
            # worker's poll takes the run over from its last recorded state.
            self._cancel_tasks()
            log.warning("workflow.run_interrupted", run_id=self.run_id, worker=self.engine.worker_id, error=repr(exc))
            return "lost"

    async def _step_forward(self, batch: Batch, launch: list[tuple[str, float]]) -> str | None:
        """Commit what happened and start what is ready; a status once this worker lets go.

        Ready steps of inline types (quick and deterministic, like ``transform``) run here and now,
        their outcomes joining the same batch: a chain of them costs one commit, not one each. That
        keeps at-least-once intact: if this worker dies before the commit, none of the chain was
        recorded and the next holder runs it again with the same inputs."""
        while True:
            failed = self._failure()
            if failed:
                self._cancel_tasks()
                self._end(batch, "failed", error=failed)
                await self._commit(batch)
                return "failed"
            starting = self._start_ready(batch)
            if not starting or not all(self._inline(key) for key in starting):
                break
            for key in starting:
                launch += self._apply(key, await self._run_step(key, 0.0), batch)
        status: str | None = None
        if not self.tasks and not starting:
            if launch and min(delay for _, delay in launch) > INLINE_BACKOFF_SECONDS:
                self._park(batch, launch)
                status = "running"
            elif not launch:
                status = self._settle(batch)
        await self._commit(batch)
        if status == "waiting":
            await self.engine.recheck_waiting(self)
        if status is not None:
            return status
        self._launch(starting)
        for key, delay in launch:
            self._launch([key], delay=delay)
        return None

    def _park(self, batch: Batch, launch: list[tuple[str, float]]) -> None:
        """Only retries backing off remain: let go of the run until the first is due."""
        for key, _ in launch:
            state = self.state(key)
            state.status, state.attempt = "pending", state.attempt - 1
            batch.steps[key] = state
        delay = min(delay for _, delay in launch)
        self.parked_until = self._clock.now() + timedelta(seconds=delay)
        batch.run.update(lease_owner=None, due_at=self.parked_until)

    async def _commit(self, batch: Batch) -> None:
        await self.engine.commit(self, batch)
        await self.engine.after_commit(self)

    def _cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()

    # -- state transitions ---------------------------------------------------------------------------

    def state(self, key: str) -> StepState:
        found = self.states.get(key)
        if found is None:
            found = self.states[key] = StepState(key)
        return found

    def _spec(self, key: str) -> StepSpec:
        return self.definition.step(key)

    def _inline(self, key: str) -> bool:
        spec = self._spec(key)
        if spec.type == MAP_STEP:
            return False
        try:
            kind = self.engine._registry.get(spec.type)
        except LookupError:
            return False
        return bool(getattr(kind, "inline", False))

    def _done(self, key: str) -> bool:
        state = self.states.get(key)
        return state is not None and (
            state.status in ("succeeded", "skipped")
            or (state.status == "failed" and self._spec(key).on_error == "continue")
        )

    def _recover_lost(self, batch: Batch) -> None:
        """Steps left ``running`` by the previous holder: run them again, or fail those lost too often."""
        for key, state in self.states.items():
            if state.status != "running" or "[" in key:
                continue
            state.lost += 1
            batch.steps[key] = state
            if state.lost > self._settings.max_lost_attempts:
                state.status = "failed"
                state.error = _error(f"lost with its worker {state.lost} times", "worker_lost")
                state.finished_at = self._clock.now()
                batch.event("step.failed", key, error=state.error, attempt=state.attempt)
            else:
                batch.event("step.lost", key, attempt=state.attempt, lost=state.lost)
                self._relaunch.append(key)

    def _check_waiting(self, batch: Batch) -> list[tuple[str, float]]:
        now = self._clock.now()
        launch: list[tuple[str, float]] = []
        for key, state in self.states.items():
            if state.status != "waiting" or "[" in key:
                continue
            suspend = state.suspend or {}
            until = datetime.fromisoformat(suspend["until"]) if suspend.get("until") else None
            if state.resume is not None:
                if "error" in state.resume:
                    launch += self._apply(key, Outcome("failed", error=state.resume["error"]), batch)
                else:
                    launch += self._apply(key, Outcome("succeeded", output=state.resume.get("output")), batch)
                state.resume = None
            elif until is not None and until <= now:
                if suspend.get("timeout_fails"):
                    timeout = Outcome("failed", error=_error("timed out while waiting", "wait_timeout"))
                    launch += self._apply(key, timeout, batch)
                else:
                    launch += self._apply(key, Outcome("succeeded", output=suspend.get("timeout_output")), batch)
        return launch

    def _ready(self) -> list[str]:
        ready = []
        for key in self.scheduled:
            state = self.states.get(key)
            if state is not None and state.status != "pending":
                continue
            if all(self._done(need) for need in self.needs[key]):
                ready.append(key)
        return ready

    def _start_ready(self, batch: Batch) -> list[str]:
        """Mark every ready step started (in ``batch``) and return them, the lost ones included."""
        now = self._clock.now()
        starting = list(self._relaunch)
        self._relaunch.clear()
        for key in self._ready():
            state = self.state(key)
            state.status = "running"
            state.attempt += 1
            state.started_at = state.started_at or now
            batch.steps[key] = state
            batch.event("step.started", key, attempt=state.attempt)
            starting.append(key)
        if starting:
            batch.run["current_step"] = self.run.current_step = starting[-1]
        return starting

    def _launch(self, keys: list[str], *, delay: float = 0.0) -> None:
        for key in keys:
            task = asyncio.create_task(self._run_step(key, delay), name=f"workflow-step:{self.run_id}:{key}")
            self.tasks[task] = key

    def _apply(self, key: str, outcome: Outcome, batch: Batch) -> list[tuple[str, float]]:
        """Record a finished attempt; returns steps to launch again (retry, fallback) with a delay."""
        now = self._clock.now()
        state = self.state(key)
        batch.steps[key] = state
        fallback_for = self._fallback_owner(key)
        if outcome.status == "succeeded":
            state.status, state.output, state.finished_at = "succeeded", outcome.output, now
            state.suspend = state.resume = None
            batch.event("step.succeeded", key, attempt=state.attempt, output=_brief(outcome.output))
            if fallback_for is not None:
                owner = self.state(fallback_for)
                owner.status, owner.output, owner.finished_at = "succeeded", outcome.output, now
                batch.steps[fallback_for] = owner
                batch.event("step.recovered", fallback_for, fallback=key)
            return []
        if outcome.status == "skipped":
            state.status, state.finished_at = "skipped", now
            batch.event("step.skipped", key)
            return []
        if outcome.status == "suspended":
            assert outcome.suspend is not None
            state.status, state.suspend = "waiting", outcome.suspend.as_record()
            batch.event("step.waiting", key, **{k: v for k, v in state.suspend.items() if v is not None})
            return []
        # failed
        spec = self._spec(key)
        policy = spec.retry or RetryPolicy()
        state.error = outcome.error
        if outcome.retryable and state.attempt < policy.attempts:
            delay = policy.delay(state.attempt)
            state.attempt += 1
            state.status = "running"
            batch.event("step.retrying", key, attempt=state.attempt, delay_seconds=delay, error=outcome.error)
            return [(key, delay)]
        state.status, state.finished_at = "failed", now
        batch.event("step.failed", key, attempt=state.attempt, error=outcome.error)
        if spec.on_error == "fallback" and spec.fallback is not None and fallback_for is None:
            fallback = self.state(spec.fallback)
            fallback.status, fallback.attempt, fallback.started_at = "running", fallback.attempt + 1, now
            batch.steps[spec.fallback] = fallback
            batch.event("step.started", spec.fallback, attempt=fallback.attempt, fallback_for=key)
            return [(spec.fallback, 0.0)]
        return []

    def _fallback_owner(self, key: str) -> str | None:
        for spec in self.definition.steps:
            if spec.fallback == key:
                return spec.id
        return None

    def _failure(self) -> dict[str, Any] | None:
        """The error that ends the run, if a step failed for good with nothing to recover it."""
        for spec in self.definition.steps:
            state = self.states.get(spec.id)
            if state is None or state.status != "failed":
                continue
            owner = self._fallback_owner(spec.id)
            if owner is not None:  # a fallback that failed fails the step it stood in for
                return _error(
                    f"step {owner!r} failed and so did its fallback {spec.id!r}",
                    "step_failed",
                    step=owner,
                    cause=state.error,
                )
            if spec.on_error == "continue":
                continue
            fallback = spec.fallback
            if (
                spec.on_error == "fallback"
                and fallback
                and self.states.get(fallback, StepState(fallback)).status in ("running", "succeeded")
            ):
                continue
            message = (state.error or {}).get("message", "failed")
            return _error(f"step {spec.id!r} failed: {message}", "step_failed", step=spec.id, cause=state.error)
        return None

    def _settle(self, batch: Batch) -> str | None:
        """Nothing runs: end, park (waiting / backing off), or None if there is more to start."""
        if self._ready():
            return None
        waiting = [s for k, s in self.states.items() if s.status == "waiting" and "[" not in k]
        if waiting:
            times = [
                datetime.fromisoformat(s.suspend["until"]) for s in waiting if s.suspend and s.suspend.get("until")
            ]
            self.parked_until = min(times) if times else None
            batch.run.update(status="waiting", lease_owner=None, due_at=self.parked_until)
            batch.event("run.waiting", None, steps=[s.key for s in waiting])
            return "waiting"
        if all(self._done(key) for key in self.scheduled):
            try:
                result = self._result()
            except templates.TemplateProblem as exc:
                self._end(batch, "failed", error=_error(f"output: {exc}", "template_error"))
                return "failed"
            self._end(batch, "succeeded", result=result)
            return "succeeded"
        failed = self._failure() or _error("the run cannot make progress", "stuck")
        self._end(batch, "failed", error=failed)
        return "failed"

    def _result(self) -> Any:
        if self.definition.output is not None:
            return templates.evaluate_tree(self.definition.output, self.scope())
        last = self.scheduled[-1]
        return self.states[last].output if last in self.states else None

    def _end(self, batch: Batch, status: str, *, result: Any = None, error: dict[str, Any] | None = None) -> None:
        now = self._clock.now()
        if status == "succeeded" and json_size(result) > self._settings.max_output_bytes:
            status, result = "failed", None
            error = _error(f"the result is larger than {self._settings.max_output_bytes} bytes", "output_too_large")
        batch.run.update(
            status=status,
            result=result,
            error=error,
            finished_at=now,
            due_at=None,
            lease_owner=None,
            progress=1.0 if status == "succeeded" else self._progress(),
        )
        batch.event(f"run.{status}", None, **({"error": error} if error else {}))
        for name, value in batch.run.items():  # the run as written: what a waiter in this process gets
            setattr(self.run, name, value)
        self.run.updated_at = now

    def _progress(self) -> float:
        return round(sum(1 for key in self.scheduled if self._done(key)) / len(self.scheduled), 4)

    async def _cancelled(self) -> None:
        batch = Batch()
        now = self._clock.now()
        for key, state in self.states.items():
            if state.status in ("running", "waiting", "pending") and key in self.persisted:
                state.status, state.finished_at = "cancelled", now
                batch.steps[key] = state
        self._end(batch, "cancelled", error=_error("cancelled by request", "cancelled"))
        await self.engine.commit(self, batch)
        await self.engine.after_commit(self)

    async def _hand_back(self) -> None:
        """Shutdown: running steps go back to pending (not counted as lost), the run is due now."""
        batch = Batch()
        for key, state in self.states.items():
            if state.status == "running" and "[" not in key:
                state.status = "pending"
                state.attempt = max(0, state.attempt - 1)
                batch.steps[key] = state
        batch.run.update(lease_owner=None, due_at=self._clock.now())
        batch.event("run.handed_back", None, worker=self.engine.worker_id)
        with contextlib.suppress(LeaseLost):  # already taken over: nothing to hand back
            await self.engine.commit(self, batch)

    # -- one step ------------------------------------------------------------------------------------

    def scope(self, **extra: Any) -> dict[str, Any]:
        steps = {
            key: {"output": state.output, "status": state.status, "error": state.error}
            for key, state in self.states.items()
            if "[" not in key and state.status in ("succeeded", "skipped", "failed")
        }
        run = {"id": self.run_id, "workflow": self.run.workflow_name, "version": self.run.version}
        return {"input": self.run.input, "steps": steps, "run": run, **extra}

    async def _run_step(self, key: str, delay: float) -> Outcome:
        if delay > 0:
            await self.engine._sleep(delay)
        spec = self._spec(key)
        extra: dict[str, Any] = {}
        owner = self._fallback_owner(key)
        if owner is not None:
            extra["error"] = self.states[owner].error
        scope = self.scope(**extra)
        try:
            if spec.if_ is not None and not templates.evaluate(spec.if_, scope):
                return Outcome("skipped")
        except templates.TemplateProblem as exc:
            return Outcome("failed", error=_error(f"if: {exc}", "template_error"))
        if spec.type == MAP_STEP:
            return await self._run_map(spec, scope)
        state = self.state(key)
        return await self._attempt(key, spec.type, spec.with_, spec.timeout_seconds, state.attempt, scope)

    async def _attempt(
        self,
        key: str,
        step_type: str,
        with_: dict[str, Any],
        timeout_seconds: float | None,
        attempt: int,
        scope: Mapping[str, Any],
    ) -> Outcome:
        try:
            kind = self.engine._registry.get(step_type)
            values = templates.evaluate_tree(with_, scope)
            config = kind.Config.model_validate(values, context={"settings": self._settings})
        except templates.TemplateProblem as exc:
            return Outcome("failed", error=_error(str(exc), "template_error"))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            return Outcome("failed", error=_error(f"with.{where}: {first['msg']}", "invalid_config"))
        except LookupError as exc:
            return Outcome("failed", error=_error(str(exc), "unknown_step_type"))

        async def emit(kind_: str, data: Mapping[str, Any]) -> None:
            await self.engine.commit(self, Batch(events=[{"type": kind_, "step": key, "data": dict(data)}]))

        async def recall(kind_: str) -> list[dict[str, Any]]:
            async with self.engine._database.reader() as session:
                return await repo.step_events(session, self.run_id, key, kind_)

        ctx = StepContext(
            run_id=self.run_id,
            workflow=self.run.workflow_name,
            step_id=key,
            attempt=attempt,
            owner=self.owner,
            clock=self._clock,
            services=self.engine._services,
            idempotency_key=idempotency_key(self.run_id, key, attempt),
            emit=emit,
            recall=recall,
        )
        limits = self._settings
        seconds = min(timeout_seconds or limits.default_step_timeout_seconds, limits.max_step_timeout_seconds)
        outcome = await self._timed_run(kind, ctx, config, seconds)
        metrics = self.engine.metrics
        metrics.steps.labels(step_type, outcome.status).inc()
        return outcome

    async def _timed_run(self, kind: StepType, ctx: StepContext, config: Any, seconds: float) -> Outcome:
        started = time.perf_counter()
        try:
            return await self._run_kind(kind, ctx, config, seconds)
        finally:
            self.engine.metrics.step_seconds.labels(kind.name).observe(time.perf_counter() - started)

    async def _run_kind(self, kind: StepType, ctx: StepContext, config: Any, seconds: float) -> Outcome:
        key = ctx.step_id
        try:
            async with asyncio.timeout(seconds):
                output = await kind.run(ctx, config)
        except TimeoutError:
            return Outcome("failed", error=_error(f"timed out after {seconds:g} s", "timeout"), retryable=True)
        except StepFailed as exc:
            return Outcome("failed", error=_error(exc.message, **exc.details), retryable=exc.retryable)
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's bug or an unexpected failure: recorded, retryable
            log.warning("workflow.step_error", run_id=self.run_id, step=key, error=repr(exc))
            return Outcome("failed", error=_error(f"{type(exc).__name__}: {exc}", "step_error"), retryable=True)
        if isinstance(output, Suspend):
            return Outcome("suspended", suspend=output)
        try:
            size = json_size(output)
        except (TypeError, ValueError) as exc:
            return Outcome("failed", error=_error(f"the output is not JSON: {exc}", "output_invalid"))
        if size > self._settings.max_output_bytes:
            return Outcome(
                "failed",
                error=_error(f"the output is larger than {self._settings.max_output_bytes} bytes", "output_too_large"),
            )
        return Outcome("succeeded", output=json.loads(json.dumps(output, default=str)))

    async def _run_map(self, spec: StepSpec, scope: Mapping[str, Any]) -> Outcome:
        """Fan the inner step out over ``over``; each element's outcome is recorded as it ends, so a
        run resumed after a crash reruns only the elements that had not finished."""
        assert spec.step is not None
        try:
            items = templates.evaluate_tree(spec.over, scope)
        except templates.TemplateProblem as exc:
            return Outcome("failed", error=_error(f"over: {exc}", "template_error"))
        if not isinstance(items, list):
            return Outcome("failed", error=_error(f"over must be a list, not {type(items).__name__}", "invalid_config"))
        inner = spec.step
        policy = inner.retry or RetryPolicy()
        limit = asyncio.Semaphore(spec.concurrency)
        outputs: list[Any] = [None] * len(items)

        async def element(index: int, item: Any) -> None:
            key = f"{spec.id}[{index}]"
            state = self.state(key)
            if state.status == "succeeded":
                outputs[index] = state.output
                return
            async with limit:
                while True:
                    state.attempt += 1
                    state.status, state.started_at = "running", self._clock.now()
                    await self.engine.commit(self, Batch(steps={key: state}))
                    outcome = await self._attempt(
                        key,
                        inner.type,
                        inner.with_,
                        inner.timeout_seconds,
                        state.attempt,
                        {**scope, "item": item, "index": index},
                    )
                    if outcome.status == "succeeded":
                        state.status, state.output, state.finished_at = "succeeded", outcome.output, self._clock.now()
                        await self.engine.commit(self, Batch(steps={key: state}))
                        outputs[index] = outcome.output
                        return
                    if outcome.status == "suspended":
                        raise _MapFailed(_error("a map's inner step cannot wait", "invalid_config"))
                    state.error = outcome.error
                    if not outcome.retryable or state.attempt >= policy.attempts:
                        state.status, state.finished_at = "failed", self._clock.now()
                        await self.engine.commit(self, Batch(steps={key: state}))
                        message = (outcome.error or {}).get("message", "failed")
                        raise _MapFailed(_error(f"element {index} failed: {message}", "map_failed", index=index))
                    await self.engine._sleep(policy.delay(state.attempt))

        failures: list[_MapFailed] = []
        try:
            async with asyncio.TaskGroup() as group:
                for index, item in enumerate(items):
                    group.create_task(element(index, item))
        except* _MapFailed as group_error:
            failures = [error for error in group_error.exceptions if isinstance(error, _MapFailed)]
        if failures:
            return Outcome("failed", error=failures[0].error, retryable=False)
        return Outcome("succeeded", output=outputs)


class _MapFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error
