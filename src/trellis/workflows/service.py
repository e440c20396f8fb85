"""The workflow service: definitions, runs, events, hooks and n8n connections, for every door.

Runs are written here (queued, with their step rows and a first event, in one transaction) and
handed to workers by a nudge; what happens next is the engine's (``engine.py``) and the worker's
(``worker.py``). Cancel and retry are writes to the run that workers obey: a queued or waiting run
is cancelled here at once; a running one is stopped by the worker that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jsonschema
import structlog
from sqlalchemy.exc import IntegrityError

from trellis.auth.models import User
from trellis.auth.schemas import ROLE_SCOPES, Principal
from trellis.kit.clock import Clock
from trellis.kit.cursor import decode_keyset, encode_keyset
from trellis.kit.errors import AuthenticationFailed, Conflict, NotFound, PayloadTooLarge, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.outbound import OutboundClient
from trellis.kit.ownership import owner_scope, visible_or_404
from trellis.kit.secretbox import SecretBox
from trellis.kit.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from trellis.settings import Role, WorkflowSettings
from trellis.storage.database import Database
from trellis.workflows import repository as repo
from trellis.workflows.definition import WorkflowDefinition, parse_definition
from trellis.workflows.ended import RunEndListener, announce
from trellis.workflows.engine import (
    DefinitionCache,
    EventSink,
    GroupCommit,
    StepState,
    json_size,
    principal_record,
)
from trellis.workflows.models import N8nConnection, Workflow, WorkflowHook, WorkflowRun, WorkflowStep, WorkflowVersion
from trellis.workflows.schemas import ExecuteRequest, HookCreate, N8nConnectionIn, StepTypeOut
from trellis.workflows.steps.base import StepContext
from trellis.workflows.steps.registry import MAP_STEP, StepRegistry
from trellis.workflows.worker import RunWaiters, WorkflowWorker

log = structlog.get_logger(__name__)

CANCELLABLE = ("queued", "running", "waiting")
RETRYABLE = ("failed", "cancelled")
RESOLVED_CACHE_MAX = 4096  # (owner, workflow name) pairs remembered by execute


class _StaleWorkflow(Exception):
    """A run was to be created from a remembered workflow that changed meanwhile (a new version, a
    delete, elsewhere): ``execute`` looks the workflow up again."""


def _run_not_found(run_id: str) -> NotFound:
    return NotFound("workflow run not found", details={"run_id": run_id})


def _workflow_not_found(name: str) -> NotFound:
    return NotFound(f"no workflow named {name!r}", details={"workflow": name})


def run_cursor(row: WorkflowRun) -> str:
    """The history cursor of the page that starts after ``row`` (each listed run has one)."""
    return encode_keyset(row.created_at, row.id, order="runs")


@dataclass(frozen=True)
class HistoryFilters:
    workflow: str | None = None
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None
    owner: str | None = None  # None: the caller's own runs; a user id, or ALL_OWNERS (admins only)


class WorkflowService:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: WorkflowSettings,
        registry: StepRegistry,
        definitions: DefinitionCache,
        secrets_box: SecretBox,
        outbound: OutboundClient,
        waiters: RunWaiters,
        *,
        nudge: Callable[[str], Awaitable[None]],
        cancel_local: Callable[[str], bool] = lambda run_id: False,
        local_worker: Callable[[], WorkflowWorker | None] = lambda: None,
        run_ends: RunEndListener | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_events: EventSink | None = None,
    ) -> None:
        self.on_events = on_events
        self._database = database
        self._run_ends = run_ends
        self._clock = clock
        self.settings = settings
        self.registry = registry
        self._definitions = definitions
        self._box = secrets_box
        self._outbound = outbound
        self._waiters = waiters
        self._nudge_now = nudge
        self.cancel_local = cancel_local
        self._local_worker = local_worker
        self._creations: GroupCommit[_NewRun, bool] = GroupCommit(self._create_group)
        self._sleep = sleep
        # What execute resolved a workflow name to, by (owner id, name): read once, then checked in
        # the transaction that creates the run (``_insert_runs``), not looked up before each run.
        self._resolved: dict[tuple[str, str], repo.Resolved] = {}

    async def _nudge(self, run_id: str) -> None:
        """Tell a worker; if the queue is unreachable the run still starts: workers poll the database
        (within [workflow] poll_seconds), the source of truth. A nudge is an accelerator."""
        try:
            await self._nudge_now(run_id)
        except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the run is safe
            log.warning("workflow.nudge_failed", run_id=run_id, error=repr(exc))
            # Polls leave a new run to its nudge for a moment ([workflow] nudge_grace_seconds):
            # this one has none coming, so it is made due from before that moment.
            async with self._database.transaction() as session:
                grace = timedelta(seconds=self.settings.nudge_grace_seconds)
                await repo.backdate_new_run(session, run_id, self._clock.now() - grace)

    # -- definitions ---------------------------------------------------------------------------------

    def parse(self, raw: Any) -> WorkflowDefinition:
        if json_size(raw) > self.settings.max_definition_bytes:
            raise PayloadTooLarge(
                f"the definition is larger than {self.settings.max_definition_bytes} bytes",
                details={"max_bytes": self.settings.max_definition_bytes},
            )
        return parse_definition(raw, self.registry, settings=self.settings)

    def step_types(self) -> list[StepTypeOut]:
        out = [
            StepTypeOut(
                name=MAP_STEP,
                description="Run `step` once per element of `over`, at most `concurrency` at a time.",
                side_effects=False,
                config_schema={},
            )
        ]
        for name in self.registry.names:
            if name == MAP_STEP:
                continue
            kind = self.registry.get(name)
            out.append(
                StepTypeOut(
                    name=name,
                    description=kind.description,
                    side_effects=kind.side_effects,
                    config_schema=kind.Config.model_json_schema(by_alias=True),
                )
            )
        return out

    async def save(
        self, actor: Principal, name: str, raw: dict[str, Any], *, mode: str
    ) -> tuple[Workflow, int, dict[str, Any], bool]:
        """``mode``: create (409 if it exists), update (404 if not) or apply (either). A definition equal
        to the latest version makes no new version. Returns (workflow, version, definition, changed)."""
        definition = self.parse(raw)
        stored = definition.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        now = self._clock.now()
        for _ in range(3):  # a concurrent save of the same name: read again and retry
            try:
                async with self._database.transaction() as session:
                    row = await repo.live_workflow(session, actor.user_id, name)
                    if row is None:
                        if mode == "update":
                            raise _workflow_not_found(name)
                        row = Workflow(
                            id=new_id("wf"),
                            owner_id=actor.user_id,
                            name=name,
                            latest_version=1,
                            created_at=now,
                            updated_at=now,
                        )
                        session.add(row)
                        await session.flush()
                        session.add(WorkflowVersion(workflow_id=row.id, version=1, definition=stored, created_at=now))
                        self._definitions.put(row.id, 1, definition)
                        self._resolved.pop((actor.user_id, name), None)
                        return row, 1, stored, True
                    if mode == "create":
                        raise Conflict(
                            f"a workflow named {name!r} exists; PUT /api/v1/workflows/{name} makes a new version",
                            details={"workflow": name, "latest_version": row.latest_version},
                        )
                    latest = await repo.workflow_version(session, row.id, row.latest_version)
                    if latest is not None and latest.definition == stored:
                        return row, row.latest_version, stored, False
                    version = row.latest_version + 1
                    if not await repo.bump_version(session, row.id, row.latest_version, now):
                        raise _Retry
                    session.add(WorkflowVersion(workflow_id=row.id, version=version, definition=stored, created_at=now))
                    row.latest_version, row.updated_at = version, now
                    self._definitions.put(row.id, version, definition)
                    self._resolved.pop((actor.user_id, name), None)
                    return row, version, stored, True
            except (IntegrityError, _Retry):
                continue
        raise Conflict("the workflow was changed concurrently; try again", details={"workflow": name})

    async def get(
        self, actor: Principal, name: str, version: int | None = None
    ) -> tuple[Workflow, int, dict[str, Any]]:
        async with self._database.reader() as session:
            row = await repo.live_workflow(session, actor.user_id, name)
            if row is None:
                raise _workflow_not_found(name)
            chosen = version or row.latest_version
            found = await repo.workflow_version(session, row.id, chosen)
        if found is None:
            raise NotFound(
                f"workflow {name!r} has no version {chosen}",
                details={"workflow": name, "version": chosen, "latest_version": row.latest_version},
            )
        return row, chosen, found.definition

    async def versions(self, actor: Principal, name: str) -> list[WorkflowVersion]:
        async with self._database.reader() as session:
            row = await repo.live_workflow(session, actor.user_id, name)
            if row is None:
                raise _workflow_not_found(name)
            return await repo.workflow_versions(session, row.id)

    async def list_workflows(
        self, actor: Principal, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[Workflow, str | None]], str | None]:
        async with self._database.reader() as session:
            rows = await repo.live_workflows(session, actor.user_id, limit=limit + 1, after=cursor)
            page = rows[:limit]
            out = []
            for row in page:
                version = await repo.workflow_version(session, row.id, row.latest_version)
                out.append((row, (version.definition if version else {}).get("description")))
        return out, (page[-1].name if len(rows) > limit else None)

    async def delete(self, actor: Principal, name: str) -> None:
        """Runs already started keep their version; the name can be used again."""
        async with self._database.transaction() as session:
            row = await repo.live_workflow(session, actor.user_id, name)
            if row is None:
                raise _workflow_not_found(name)
            row.deleted_at = self._clock.now()
        self._resolved.pop((actor.user_id, name), None)

    # -- runs ----------------------------------------------------------------------------------------

    async def execute(
        self,
        actor: Principal,
        request: ExecuteRequest,
        *,
        parent: tuple[str, str] | None = None,
    ) -> tuple[WorkflowRun, bool]:
        """Queue a run (or find the one this idempotency key made). Returns (run, created)."""
        if json_size(request.input) > self.settings.max_input_bytes:
            raise PayloadTooLarge(
                f"input is larger than {self.settings.max_input_bytes} bytes",
                details={"field": "input", "max_bytes": self.settings.max_input_bytes},
            )
        if request.idempotency_key is not None:
            existing = await self._by_key(actor.user_id, request.idempotency_key)
            if existing is not None:
                return existing, False
        try:
            return await self._create(actor, request, parent, cached=True)
        except _StaleWorkflow:
            self._resolved.pop((actor.user_id, request.workflow), None)
            return await self._create(actor, request, parent, cached=False)

    async def _resolve(
        self, actor: Principal, request: ExecuteRequest, *, cached: bool
    ) -> tuple[repo.Resolved, int, bool]:
        """The workflow and version a run of ``request`` uses, and whether it came from what this
        process remembered (then ``_insert_runs`` checks it still holds when the run is written)."""
        key = (actor.user_id, request.workflow)
        remembered = self._resolved.get(key) if cached else None
        if remembered is not None and (request.version is None or request.version <= remembered.latest_version):
            # Versions are never changed or removed: any version up to the latest exists.
            return remembered, request.version or remembered.latest_version, True
        async with self._database.reader() as session:
            row, version = await repo.resolve(session, actor.user_id, request.workflow, request.version)
        if row is None:
            raise _workflow_not_found(request.workflow)
        if version is None:
            raise NotFound(
                f"workflow {request.workflow!r} has no version {request.version}",
                details={
                    "workflow": request.workflow,
                    "version": request.version,
                    "latest_version": row.latest_version,
                },
            )
        if len(self._resolved) >= RESOLVED_CACHE_MAX:
            self._resolved.clear()
        self._resolved[key] = row
        return row, version, False

    async def _create(
        self, actor: Principal, request: ExecuteRequest, parent: tuple[str, str] | None, *, cached: bool
    ) -> tuple[WorkflowRun, bool]:
        row, version, remembered = await self._resolve(actor, request, cached=cached)
        definition = await self._definitions.get(row.id, version)
        if definition.input_schema is not None:
            validator = jsonschema.validators.validator_for(definition.input_schema)(definition.input_schema)
            problems = sorted(validator.iter_errors(request.input), key=lambda e: list(e.absolute_path))
            if problems and remembered:
                raise _StaleWorkflow  # refused by the schema of a version that may not be the latest now
            if problems:
                raise ValidationFailed.of_fields(
                    [
                        {
                            "field": ".".join(["input", *map(str, p.absolute_path)]),
                            "message": p.message,
                            "location": "body",
                            "type": f"schema_{p.validator}",
                        }
                        for p in problems[:20]
                    ],
                    summary=f"input does not match the workflow's input_schema: {problems[0].message}",
                )
        now = self._clock.now()
        run = WorkflowRun(
            id=new_id("run"),
            owner_id=actor.user_id,
            workflow_id=row.id,
            workflow_name=row.name,
            version=version,
            status="queued",
            input=request.input,
            result=None,
            error=None,
            progress=0.0,
            current_step=None,
            idempotency_key=request.idempotency_key,
            principal=principal_record(actor),
            cancel_requested=False,
            parent_run_id=parent[0] if parent else None,
            parent_step=parent[1] if parent else None,
            lease_owner=None,
            lease_epoch=0,
            due_at=now,
            event_seq=1,
            created_at=now,
            started_at=None,
            finished_at=None,
            updated_at=now,
        )
        new = _NewRun(run, [spec.id for spec in definition.scheduled()], definition)
        if remembered:
            new.check_latest = row.latest_version if request.version is None else 0
        try:
            adopted = await self._creations.submit(new)
        except IntegrityError:
            if request.idempotency_key is None:
                raise
            existing = await self._by_key(actor.user_id, request.idempotency_key)
            if existing is None:
                raise
            return existing, False
        local = self._local_worker()
        if adopted and local is not None:
            local.adopt(local.engine.adopt(run, definition, [StepState(key) for key in new.keys]))
        else:
            await self._nudge(run.id)
        return run, True

    async def _create_group(self, items: list[_NewRun]) -> list[bool | BaseException]:
        """Write new runs, many in one transaction (see ``GroupCommit``). Returns for each whether this
        process's worker took it at once (the embedded fast path: no nudge, no claim transaction)."""
        try:
            async with self._database.transaction() as session:
                adopted: list[bool | BaseException] = list(await self._insert_runs(session, items))
            self._published(items)
            return adopted
        except IntegrityError:
            # One of them collided (the same idempotency key twice): write each alone.
            results: list[bool | BaseException] = []
            for item in items:
                try:
                    async with self._database.transaction() as session:
                        results += await self._insert_runs(session, [item])
                    self._published([item])
                except IntegrityError as exc:
                    results.append(exc)
            return results

    def _published(self, items: list[_NewRun]) -> None:
        """After the commit: the new runs' first events to the live-events sink."""
        if self.on_events is not None:
            self.on_events([(item.run.owner_id, event) for item in items for event in item.events])

    async def _insert_runs(self, session: Any, items: list[_NewRun]) -> list[bool | BaseException]:
        """Write ``items``' runs; those made from a remembered workflow that no longer holds (deleted,
        or not the latest version any more when the latest was asked for) are not written: their
        result is ``_StaleWorkflow``."""
        checked = {item.run.workflow_id for item in items if item.check_latest is not None}
        if checked:
            live = await repo.live_latest_versions(session, checked)
            stale = [
                item.check_latest is not None
                and (
                    item.run.workflow_id not in live
                    or (item.check_latest > 0 and live[item.run.workflow_id] != item.check_latest)
                )
                for item in items
            ]
            for item, bad in zip(items, stale, strict=True):
                if not bad:
                    item.check_latest = None  # checked: written alone after a collision, it is not again
            if any(stale):
                fresh = [item for item, bad in zip(items, stale, strict=True) if not bad]
                written = iter(await self._insert_fresh(session, fresh) if fresh else [])
                return [_StaleWorkflow() if bad else next(written) for bad in stale]
        return list(await self._insert_fresh(session, items))

    async def _insert_fresh(self, session: Any, items: list[_NewRun]) -> list[bool]:
        now = self._clock.now()
        local = self._local_worker()
        room = local.room() if local is not None else 0
        adopted = [False] * len(items)
        if room and local is not None:
            owners = sorted({item.run.owner_id for item in items})
            for owner in owners:
                await repo.lock_claims(
                    session,
                    owner,
                    now,
                    max_per_user=self.settings.max_running_per_user,
                    max_total=self.settings.max_running_total,
                )
            mine, total = await repo.running_counts(session, owners, now)
            for index, item in enumerate(items):
                owner = item.run.owner_id
                if (
                    room
                    and mine[owner] < self.settings.max_running_per_user
                    and total < self.settings.max_running_total
                ):
                    adopted[index] = True
                    room, total, mine[owner] = room - 1, total + 1, mine[owner] + 1
                    run = item.run
                    run.status, run.lease_owner, run.lease_epoch = "running", local.worker_id, 1
                    run.due_at = now + timedelta(seconds=self.settings.lease_seconds)
                    run.started_at, run.event_seq = now, 2
        columns = [column.key for column in WorkflowRun.__table__.columns]
        await repo.insert_runs(session, [{key: getattr(item.run, key) for key in columns} for item in items])
        await repo.write_steps(
            session,
            [],
            [
                {"run_id": item.run.id, "key": key, "status": "pending", "attempt": 0, "lost": 0}
                for item in items
                for key in item.keys
            ],
        )
        events: list[dict[str, Any]] = []
        for item, taken in zip(items, adopted, strict=True):
            run = item.run
            data = {"workflow": run.workflow_name, "version": run.version, "parent_run_id": run.parent_run_id}
            item.events = [{"run_id": run.id, "seq": 1, "type": "run.queued", "step": None, "data": data, "at": now}]
            if taken and local is not None:
                started = {"worker": local.worker_id, "epoch": 1}
                item.events.append(
                    {"run_id": run.id, "seq": 2, "type": "run.started", "step": None, "data": started, "at": now}
                )
            events += item.events
        await repo.insert_events(session, events)
        return adopted

    async def _by_key(self, owner_id: str, key: str) -> WorkflowRun | None:
        async with self._database.reader() as session:
            return await repo.run_by_idempotency_key(session, owner_id, key)

    async def start_child(self, ctx: StepContext, workflow: str, version: int | None, input: Any) -> str:
        """``workflow.call``: a sub-run as the same owner, one per parent step whatever the attempt."""
        request = ExecuteRequest.model_construct(
            workflow=workflow, version=version, input=input, idempotency_key=f"child:{ctx.run_id}:{ctx.step_id}", wait=0
        )
        run, _ = await self.execute(ctx.owner, request, parent=(ctx.run_id, ctx.step_id))
        return run.id

    async def run(self, actor: Principal, run_id: str) -> WorkflowRun:
        """A run the actor may read: their own, or anyone's for an admin (admins see everything)."""
        async with self._database.reader() as session:
            row = await repo.run_by_id(session, run_id)
        return visible_or_404(row, actor, what="workflow run", object_id=run_id)

    async def _own_run(self, actor: Principal, run_id: str) -> WorkflowRun:
        """A run the actor may change (cancel, retry): their own only. An admin's attempt on another
        user's run answers 404 like any foreign id: admins may see every run, not act as its owner."""
        async with self._database.reader() as session:
            row = await repo.run_by_id(session, run_id)
        return visible_or_404(row, actor, what="workflow run", object_id=run_id, admin_sees_all=False)

    async def detail(self, actor: Principal, run_id: str) -> tuple[WorkflowRun, list[WorkflowStep]]:
        async with self._database.reader() as session:
            row = await repo.run_by_id(session, run_id)
            visible_or_404(row, actor, what="workflow run", object_id=run_id)
            steps = await repo.steps_of(session, run_id)
        assert row is not None
        return row, await self._in_definition_order(row.workflow_id, row.version, steps)

    async def _in_definition_order(
        self, workflow_id: str, version: int, steps: list[WorkflowStep]
    ) -> list[WorkflowStep]:
        """A run's steps as its definition lists them (a map step's items after it, by index)."""
        definition = await self._definitions.get(workflow_id, version)
        order = {spec.id: n for n, spec in enumerate(definition.steps)}

        def position(step: WorkflowStep) -> tuple[int, int]:
            base, _, index = step.key.partition("[")
            return order.get(base, len(order)), int(index.rstrip("]") or -1) if index else -1

        return sorted(steps, key=position)

    async def steps_of_runs(self, actor: Principal, runs: Sequence[WorkflowRun]) -> dict[str, list[WorkflowStep]]:
        """``detail``'s steps for many runs the actor may read in one query (others' runs get none;
        an admin reads every run's, as ``detail`` lets them)."""
        owner = None if actor.is_admin else actor.user_id
        async with self._database.reader() as session:
            rows = await repo.owned_steps_of_runs(session, owner, {run.id for run in runs})
        by_run: dict[str, list[WorkflowStep]] = {run.id: [] for run in runs}
        for step in rows:
            by_run[step.run_id].append(step)
        return {
            run.id: await self._in_definition_order(run.workflow_id, run.version, by_run[run.id])
            for run in runs
            if owner is None or run.owner_id == owner
        }

    async def versions_of(
        self, actor: Principal, keys: Collection[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[Workflow, WorkflowVersion]]:
        """The workflow and version each ``(workflow_id, version)`` names (what a run ran), one query;
        keys that are not the actor's are absent (an admin's see every owner's, as their runs do).
        Deleted workflows are included: runs keep them."""
        owner = None if actor.is_admin else actor.user_id
        async with self._database.reader() as session:
            rows = await repo.versions_by_keys(session, owner, set(keys))
        return {(workflow.id, version.version): (workflow, version) for workflow, version in rows}

    async def wait_for(self, run_id: str, seconds: float) -> WorkflowRun:
        """The run once it ended or ``seconds`` passed. A run this process executes signals its end
        at once; so does one executed elsewhere when the run-end signal is listening (PostgreSQL,
        see ``ended.py``). Either way the database is read then, and every second as a safety net.
        Without a signal the database is polled every 10 ms, rising to 100 ms."""
        # Real time, not the injected clock: this bounds how long a request is held open.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, self.settings.max_execute_wait_seconds)
        future = self._waiters.register(run_id)
        local = self._local_worker()
        signalled = (local is not None and local.started) or await self._run_ends_signalled()
        interval = 1.0 if signalled else 0.01
        try:
            while True:
                remaining = deadline - loop.time()
                if not future.done() and remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(interval, remaining)):
                            await asyncio.shield(future)
                ended = future.result() if future.done() else None
                if ended is not None and ended.status in repo.ENDED:
                    return ended  # as this process's worker wrote it
                async with self._database.reader() as session:
                    row = await repo.run_by_id(session, run_id)
                assert row is not None
                if row.status in repo.ENDED or deadline - loop.time() <= 0:
                    return row
                if future.done():  # ended, then moved on (a retry): wait for the next end
                    self._waiters.discard(run_id, future)
                    future = self._waiters.register(run_id)
                interval = 1.0 if signalled else min(interval * 1.5, 0.1)
        finally:
            self._waiters.discard(run_id, future)

    async def _run_ends_signalled(self) -> bool:
        if self._run_ends is None:
            return False
        try:
            return await self._run_ends.ensure()
        except Exception as exc:  # noqa: BLE001 - the signal is an accelerator: poll instead
            log.warning("workflow.run_end_listen_failed", error=repr(exc))
            return False

    async def history(self, actor: Principal, filters: HistoryFilters) -> tuple[list[WorkflowRun], str | None]:
        before = decode_keyset(filters.cursor, order="runs") if filters.cursor else None
        query = repo.HistoryQuery(
            owner_id=owner_scope(actor, filters.owner, what="runs"),
            workflow=filters.workflow,
            statuses=filters.statuses,
            since=filters.since,
            until=filters.until,
            limit=filters.limit + 1,
            before=before,
        )
        async with self._database.reader() as session:
            rows = await repo.history(session, query)
        page = rows[: filters.limit]
        return page, (run_cursor(page[-1]) if len(rows) > filters.limit else None)

    async def events(self, actor: Principal, run_id: str, *, after: int, limit: int) -> list[Any]:
        await self.run(actor, run_id)
        async with self._database.reader() as session:
            return await repo.events_after(session, run_id, after, limit)

    async def cancel(self, actor: Principal, run_id: str) -> WorkflowRun:
        row = await self._own_run(actor, run_id)
        if row.status not in CANCELLABLE:
            raise Conflict(
                f"the run is {row.status}; only queued, running or waiting runs can be cancelled",
                details={"run_id": run_id, "status": row.status},
            )
        await self._cancel(run_id, row.owner_id)
        return await self.run(actor, run_id)

    def _appended(self, owner_id: str, run_id: str, seq: int, event: dict[str, Any]) -> None:
        """After the commit: one event the service appended, to the live-events sink."""
        if self.on_events is not None:
            self.on_events([(owner_id, {"run_id": run_id, "seq": seq, **event})])

    async def _cancel(self, run_id: str, owner_id: str) -> None:
        now = self._clock.now()
        requested: dict[str, Any] = {"type": "run.cancel_requested", "step": None, "data": {}, "at": now}
        async with self._database.transaction() as session:
            seq = await repo.allocate_events(session, run_id, 1, {"cancel_requested": True, "updated_at": now})
            if seq is not None:
                await repo.append_events(session, run_id, seq, [requested])
            children = await repo.children(session, run_id)
        if seq is not None:
            self._appended(owner_id, run_id, seq, requested)
        # Nobody holds a queued or waiting run (or a running one between attempts): end it here.
        # A run a worker holds is ended by that worker (told at once if it is this process).
        if not self.cancel_local(run_id):
            await self._end_unheld(run_id)
        for child in children:
            await self._cancel(child, owner_id)  # a sub-run has its parent's owner

    async def _end_unheld(self, run_id: str) -> None:
        now = self._clock.now()
        async with self._database.transaction() as session:
            row = await repo.run_by_id(session, run_id)
            if row is None or row.status not in CANCELLABLE:
                return
            held = (
                row.status == "running" and row.lease_owner is not None and row.due_at is not None and row.due_at > now
            )
            if held:
                return
            steps = await repo.steps_of(session, run_id)
            for step in steps:
                if step.status in ("pending", "running", "waiting"):
                    step.status, step.finished_at = "cancelled", now
            seq = await repo.allocate_events(
                session,
                run_id,
                1,
                {
                    "status": "cancelled",
                    "finished_at": now,
                    "due_at": None,
                    "lease_owner": None,
                    "lease_epoch": row.lease_epoch + 1,  # fences out a worker that was about to claim
                    "error": {"message": "cancelled by request", "type": "cancelled"},
                    "updated_at": now,
                },
            )
            assert seq is not None
            cancelled: dict[str, Any] = {"type": "run.cancelled", "step": None, "data": {}, "at": now}
            await repo.append_events(session, run_id, seq, [cancelled])
            await announce(session, [run_id])
        self._appended(row.owner_id, run_id, seq, cancelled)
        self._waiters.notify(run_id)

    async def retry(self, actor: Principal, run_id: str) -> WorkflowRun:
        """Re-run a failed or cancelled run from the steps that did not succeed, keeping the outputs
        of those that did (the same run id; its attempts keep counting)."""
        row = await self._own_run(actor, run_id)
        if row.status not in RETRYABLE:
            raise Conflict(
                f"the run is {row.status}; only failed or cancelled runs can be retried",
                details={"run_id": run_id, "status": row.status},
            )
        now = self._clock.now()
        async with self._database.transaction() as session:
            steps = await repo.steps_of(session, run_id)
            reset = []
            for step in steps:
                if step.status in ("failed", "cancelled", "running", "waiting"):
                    step.status, step.error, step.finished_at, step.suspend, step.resume = (
                        "pending",
                        None,
                        None,
                        None,
                        None,
                    )
                    reset.append(step.key)
            seq = await repo.allocate_events(
                session,
                run_id,
                1,
                {
                    "status": "queued",
                    "error": None,
                    "result": None,
                    "finished_at": None,
                    "cancel_requested": False,
                    "due_at": now,
                    "lease_owner": None,
                    "updated_at": now,
                },
            )
            assert seq is not None
            retried = {"type": "run.retried", "step": None, "data": {"steps": reset}, "at": now}
            await repo.append_events(session, run_id, seq, [retried])
        self._appended(row.owner_id, run_id, seq, retried)
        await self._nudge(run_id)
        return await self.run(actor, run_id)

    # -- hooks ---------------------------------------------------------------------------------------

    async def create_hook(self, actor: Principal, data: HookCreate) -> tuple[WorkflowHook, str]:
        if data.action == "start":
            if data.workflow is None:
                raise ValidationFailed.of("workflow", "a start hook names the workflow it starts", type="missing")
            await self.get(actor, data.workflow)
        elif data.workflow is not None:
            raise ValidationFailed.of("workflow", "a resume hook wakes the run waiting on it; it names no workflow")
        secret = secrets.token_urlsafe(32)
        hook = WorkflowHook(
            id=new_id("hook"),
            owner_id=actor.user_id,
            name=data.name,
            action=data.action,
            workflow_name=data.workflow,
            secret=self._box.encrypt(secret),
            created_at=self._clock.now(),
        )
        async with self._database.transaction() as session:
            session.add(hook)
        return hook, secret

    async def hooks(self, actor: Principal) -> list[WorkflowHook]:
        async with self._database.reader() as session:
            return await repo.hooks_of(session, actor.user_id)

    async def revoke_hook(self, actor: Principal, hook_id: str) -> WorkflowHook:
        async with self._database.transaction() as session:
            hook = await session.get(WorkflowHook, hook_id)
            hook = visible_or_404(hook, actor, what="hook", object_id=hook_id, admin_sees_all=False)
            if hook.revoked_at is None:
                hook.revoked_at = self._clock.now()
            return hook

    async def deliver(
        self, hook_id: str, timestamp: str | None, signature: str | None, body: bytes
    ) -> tuple[str, str, bool]:
        """An inbound delivery: verify, refuse replays, then start or resume. Returns (run id, action,
        created). Unknown and revoked hooks are 404; a bad or stale signature is 401."""
        async with self._database.reader() as session:
            hook = await session.get(WorkflowHook, hook_id)
        if hook is None or hook.revoked_at is not None:
            raise NotFound("no such hook", details={"hook_id": hook_id})
        if not timestamp or not signature:
            raise AuthenticationFailed(f"sign the delivery: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
        try:
            moment = int(timestamp)
        except ValueError:
            raise AuthenticationFailed(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
        now = self._clock.now()
        if abs(now.timestamp() - moment) > self.settings.hook_tolerance_seconds:
            raise AuthenticationFailed(
                f"the timestamp is more than {self.settings.hook_tolerance_seconds} s away from the server's clock",
                details={"server_time": int(now.timestamp())},
            )
        expected = sign(self._box.decrypt(hook.secret), timestamp, body)
        if not hmac.compare_digest(expected, signature.strip()):
            raise AuthenticationFailed("the signature does not match the body")
        try:
            payload = json.loads(body) if body else {}
        except ValueError as exc:
            raise ValidationFailed.of("", f"the body is not JSON: {exc}", type="json_invalid") from None
        owner = await self._owner_principal(hook)
        async with self._database.transaction() as session:
            if not await repo.record_delivery(session, hook.id, expected[7:], now):
                raise AuthenticationFailed("this delivery was seen before (a replay)")
            await repo.forget_deliveries_before(
                session, now - timedelta(seconds=2 * self.settings.hook_tolerance_seconds)
            )
            stored = await session.get(WorkflowHook, hook.id)
            if stored is not None:
                stored.last_used_at = now
            if hook.action == "resume":
                run_id = payload.get("run_id") if isinstance(payload, dict) else None
                if not isinstance(run_id, str):
                    raise ValidationFailed.of("run_id", "a resume delivery names the run it wakes", type="missing")
                run = await repo.run_by_id(session, run_id)
                if run is None or run.owner_id != hook.owner_id:
                    raise _run_not_found(run_id)
                step = await repo.waiting_for_hook(session, run_id, hook.id)
                if step is None:
                    raise Conflict(
                        "the run is not waiting on this hook", details={"run_id": run_id, "status": run.status}
                    )
                await repo.set_resume(session, run_id, step.key, {"output": payload.get("data")})
                await repo.wake(session, run_id, now)
        if hook.action == "resume":
            assert isinstance(run_id, str)
            await self._nudge(run_id)
            return run_id, "resume", False
        assert hook.workflow_name is not None
        data = payload.get("input", payload) if isinstance(payload, dict) else payload
        request = ExecuteRequest.model_construct(
            workflow=hook.workflow_name,
            version=None,
            input=data,
            idempotency_key=f"hook:{hook.id}:{expected[7:39]}",
            wait=0,
        )
        run_row, created = await self.execute(owner, request)
        return run_row.id, "start", created

    async def _owner_principal(self, hook: WorkflowHook) -> Principal:
        """A hook acts as its owner, with the owner's role as it is now (a disabled user's hooks stop)."""
        async with self._database.reader() as session:
            user = await session.get(User, hook.owner_id)
        if user is None or user.disabled:
            raise NotFound("no such hook", details={"hook_id": hook.id})
        role = Role(user.role)
        return Principal(user.id, user.username, role, "api_key", ROLE_SCOPES[role])

    # -- n8n connections -----------------------------------------------------------------------------

    async def put_connection(self, actor: Principal, name: str, data: N8nConnectionIn) -> N8nConnection:
        await self._outbound.check(data.base_url, field="base_url")
        now = self._clock.now()
        async with self._database.transaction() as session:
            row = await repo.n8n_connection(session, actor.user_id, name)
            if row is None:
                row = N8nConnection(
                    id=new_id("n8n"),
                    owner_id=actor.user_id,
                    name=name,
                    base_url=data.base_url.rstrip("/"),
                    api_key=self._box.encrypt(data.api_key),
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            else:
                row.base_url, row.api_key, row.updated_at = (
                    data.base_url.rstrip("/"),
                    self._box.encrypt(data.api_key),
                    now,
                )
        return row

    async def connections(self, actor: Principal) -> list[N8nConnection]:
        async with self._database.reader() as session:
            return await repo.n8n_connections(session, actor.user_id)

    async def delete_connection(self, actor: Principal, name: str) -> None:
        async with self._database.transaction() as session:
            row = await repo.n8n_connection(session, actor.user_id, name)
            if row is None:
                raise NotFound(f"no n8n connection named {name!r}", details={"connection": name})
            await session.delete(row)

    async def resolve_connection(self, owner_id: str, name: str) -> tuple[str, str]:
        async with self._database.reader() as session:
            row = await repo.n8n_connection(session, owner_id, name)
        if row is None:
            raise NotFound(f"no n8n connection named {name!r}", details={"connection": name})
        return row.base_url, self._box.decrypt(row.api_key)


class _Retry(Exception):
    pass


@dataclass
class _NewRun:
    run: WorkflowRun
    keys: list[str]
    definition: WorkflowDefinition
    events: list[dict[str, Any]] = field(default_factory=list)  # written with the run
    # Resolved from memory: check in the creating transaction that the workflow is still live and,
    # unless 0, that this is still its latest version. None: resolved from the database just now.
    check_latest: int | None = None
