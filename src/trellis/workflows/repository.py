"""Queries for workflows, runs, steps, events, hooks and n8n connections. Functions take the session
the caller opened; the engine's writes are fenced by the run's lease epoch (``fence_many``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    CursorResult,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.workflows.models import (
    N8nConnection,
    Workflow,
    WorkflowEvent,
    WorkflowHook,
    WorkflowHookDelivery,
    WorkflowRun,
    WorkflowStep,
    WorkflowVersion,
)

# The tables as Core objects, for the executemany statements of the hot path.
RUNS = cast(Table, WorkflowRun.__table__)
STEPS = cast(Table, WorkflowStep.__table__)
EVENTS = cast(Table, WorkflowEvent.__table__)
ACTIVE = ("queued", "running", "waiting")
ENDED = ("succeeded", "failed", "cancelled")


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


# Definitions ---------------------------------------------------------------------------------------


async def live_workflow(session: AsyncSession, owner_id: str, name: str) -> Workflow | None:
    row = await session.execute(
        select(Workflow).where(Workflow.owner_id == owner_id, Workflow.name == name, Workflow.deleted_at.is_(None))
    )
    return row.scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class Resolved:
    id: str
    name: str
    latest_version: int


async def resolve(
    session: AsyncSession, owner_id: str, name: str, version: int | None
) -> tuple[Resolved | None, int | None]:
    """The live workflow and, if it exists, the version asked for (default the latest), in one query
    (columns only: it runs for every execute)."""
    wanted = WorkflowVersion.version == (version if version is not None else Workflow.latest_version)
    row = (
        await session.execute(
            select(Workflow.id, Workflow.name, Workflow.latest_version, WorkflowVersion.version)
            .outerjoin(WorkflowVersion, and_(WorkflowVersion.workflow_id == Workflow.id, wanted))
            .where(Workflow.owner_id == owner_id, Workflow.name == name, Workflow.deleted_at.is_(None))
        )
    ).one_or_none()
    return (None, None) if row is None else (Resolved(row[0], row[1], row[2]), row[3])


async def live_latest_versions(session: AsyncSession, workflow_ids: Collection[str]) -> dict[str, int]:
    """The latest version of each of these workflows that is not deleted (one query)."""
    rows = await session.execute(
        select(Workflow.id, Workflow.latest_version).where(
            Workflow.id.in_(list(workflow_ids)), Workflow.deleted_at.is_(None)
        )
    )
    return {workflow_id: latest for workflow_id, latest in rows.all()}


async def workflow_version(session: AsyncSession, workflow_id: str, version: int) -> WorkflowVersion | None:
    return await session.get(WorkflowVersion, (workflow_id, version))


async def workflow_versions(session: AsyncSession, workflow_id: str) -> list[WorkflowVersion]:
    rows = await session.execute(
        select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow_id).order_by(WorkflowVersion.version)
    )
    return list(rows.scalars())


async def live_workflows(session: AsyncSession, owner_id: str, *, limit: int, after: str | None) -> list[Workflow]:
    statement = select(Workflow).where(Workflow.owner_id == owner_id, Workflow.deleted_at.is_(None))
    if after is not None:
        statement = statement.where(Workflow.name > after)
    rows = await session.execute(statement.order_by(Workflow.name).limit(limit))
    return list(rows.scalars())


async def bump_version(session: AsyncSession, workflow_id: str, expected: int, now: datetime) -> bool:
    """Compare-and-set the latest version: of two concurrent updates exactly one wins."""
    result = await session.execute(
        update(Workflow)
        .where(Workflow.id == workflow_id, Workflow.latest_version == expected, Workflow.deleted_at.is_(None))
        .values(latest_version=expected + 1, updated_at=now)
    )
    return _rowcount(result) == 1


# Runs ----------------------------------------------------------------------------------------------


async def run_by_id(session: AsyncSession, run_id: str) -> WorkflowRun | None:
    return await session.get(WorkflowRun, run_id, populate_existing=True)


async def run_by_idempotency_key(session: AsyncSession, owner_id: str, key: str) -> WorkflowRun | None:
    row = await session.execute(
        select(WorkflowRun).where(WorkflowRun.owner_id == owner_id, WorkflowRun.idempotency_key == key)
    )
    return row.scalar_one_or_none()


async def steps_of(session: AsyncSession, run_id: str) -> list[WorkflowStep]:
    rows = await session.execute(select(WorkflowStep).where(WorkflowStep.run_id == run_id))
    return list(rows.scalars())


async def events_after(session: AsyncSession, run_id: str, after_seq: int, limit: int) -> list[WorkflowEvent]:
    rows = await session.execute(
        select(WorkflowEvent)
        .where(WorkflowEvent.run_id == run_id, WorkflowEvent.seq > after_seq)
        .order_by(WorkflowEvent.seq)
        .limit(limit)
    )
    return list(rows.scalars())


async def step_events(session: AsyncSession, run_id: str, step: str, kind: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(WorkflowEvent.data)
        .where(WorkflowEvent.run_id == run_id, WorkflowEvent.step == step, WorkflowEvent.type == kind)
        .order_by(WorkflowEvent.seq)
    )
    return [dict(data) for data in rows.scalars()]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    owner_id: str | None  # None: every owner's runs (an admin's "all")
    workflow: str | None
    statuses: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    limit: int
    before: tuple[datetime, str] | None  # newest first: the page continues below this (created_at, id)


async def history(session: AsyncSession, query: HistoryQuery) -> list[WorkflowRun]:
    statement = select(WorkflowRun)
    if query.owner_id is not None:
        statement = statement.where(WorkflowRun.owner_id == query.owner_id)
    if query.workflow is not None:
        statement = statement.where(WorkflowRun.workflow_name == query.workflow)
    if query.statuses:
        statement = statement.where(WorkflowRun.status.in_(query.statuses))
    if query.since is not None:
        statement = statement.where(WorkflowRun.created_at >= query.since)
    if query.until is not None:
        statement = statement.where(WorkflowRun.created_at < query.until)
    if query.before is not None:
        moment, run_id = query.before
        statement = statement.where(tuple_(WorkflowRun.created_at, WorkflowRun.id) < tuple_(moment, run_id))
    statement = statement.order_by(WorkflowRun.created_at.desc(), WorkflowRun.id.desc()).limit(query.limit)
    return list((await session.execute(statement)).scalars())


async def append_events(
    session: AsyncSession, run_id: str, first_seq: int, events: Sequence[Mapping[str, Any]]
) -> None:
    if events:
        await session.execute(
            insert(WorkflowEvent),
            [{"run_id": run_id, "seq": first_seq + n, **event} for n, event in enumerate(events)],
        )


async def allocate_events(session: AsyncSession, run_id: str, count: int, values: Mapping[str, Any]) -> int | None:
    """Bump the run's event counter by ``count`` (and write ``values``) unconditionally: for the API's
    own writes (cancel, retry, resume). Returns the first sequence number, or None if no such run."""
    result = await session.execute(
        update(WorkflowRun)
        .where(WorkflowRun.id == run_id)
        .values({**values, "event_seq": WorkflowRun.event_seq + count})
        .returning(WorkflowRun.event_seq)
    )
    last = result.scalar_one_or_none()
    return None if last is None else last - count + 1


async def fence_many(session: AsyncSession, held: Sequence[tuple[str, int, int]], now: datetime) -> dict[str, int]:
    """The group commit's guard: for each (run id, epoch, events) still held at that epoch, take that
    many event numbers (summed per run) in one statement. Returns run id → first new number; a run
    missing from it has lost its lease."""
    counts: dict[str, int] = {}
    epochs: dict[str, int] = {}
    for run_id, epoch, events in held:
        counts[run_id] = counts.get(run_id, 0) + events
        epochs[run_id] = epoch
    result = await session.execute(
        update(WorkflowRun)
        .where(tuple_(WorkflowRun.id, WorkflowRun.lease_epoch).in_(list(epochs.items())))
        .values(event_seq=WorkflowRun.event_seq + case(counts, value=WorkflowRun.id, else_=0), updated_at=now)
        .returning(WorkflowRun.id, WorkflowRun.event_seq)
        .execution_options(synchronize_session=False)
    )
    return {run_id: last - counts[run_id] + 1 for run_id, last in result.all()}


async def update_runs(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write run columns by primary key (``id`` in each row), one executemany per set of columns."""
    if rows:
        await _update_by_key(session, RUNS, ("id",), rows)


async def insert_events(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(EVENTS.insert(), list(rows))


async def _update_by_key(
    session: AsyncSession, table: Table, keys: tuple[str, ...], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Core executemany UPDATE by primary key, one statement per set of columns (the hot path: the
    ORM's bulk update costs several times more Python per row)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        columns = tuple(sorted(k for k in row if k not in keys))
        groups.setdefault(columns, []).append({f"k_{k}" if k in keys else k: v for k, v in row.items()})
    for columns, params in groups.items():
        statement = (
            table.update()
            .where(*(table.c[k] == bindparam(f"k_{k}") for k in keys))
            .values({c: bindparam(c) for c in columns})
        )
        await session.execute(statement, params)


async def write_steps(
    session: AsyncSession, existing: Sequence[Mapping[str, Any]], fresh: Sequence[Mapping[str, Any]]
) -> None:
    """Update step rows that exist (by primary key: run_id and key in each row) and insert new ones."""
    if existing:
        await _update_by_key(session, STEPS, ("run_id", "key"), existing)
    if fresh:
        await session.execute(STEPS.insert(), list(fresh))


async def set_resume(session: AsyncSession, run_id: str, key: str, payload: Mapping[str, Any]) -> bool:
    result = await session.execute(
        update(WorkflowStep)
        .where(WorkflowStep.run_id == run_id, WorkflowStep.key == key, WorkflowStep.status.in_(("running", "waiting")))
        .values(resume=dict(payload))
    )
    return _rowcount(result) == 1


async def has_resumed_step(session: AsyncSession, run_id: str) -> bool:
    rows = await session.execute(
        select(WorkflowStep.key).where(
            WorkflowStep.run_id == run_id, WorkflowStep.status == "waiting", WorkflowStep.resume.is_not(None)
        )
    )
    return rows.first() is not None


# Claims near a limit are serialised (PostgreSQL advisory locks held to commit): two claimers
# counting at once could both see room for one more. Far from the limits, counting is exact enough
# without them: even this many claims at once cannot cross a limit, and no lock is taken.
CLAIM_LOCK_MARGIN = 64
CLAIM_GROUP_MAX = 16
# PostgreSQL advisory lock keys (first of the two int4 keys) of the claim locks.
ALL_CLAIMS_LOCK = 7215
OWNER_CLAIMS_LOCK = 7216
# A live worker's own lock (``trellis.workflows.liveness``; the second key is hashtext(worker id)),
# held by the ids that end in LIVE_MARK.
WORKER_ALIVE_LOCK = 7217
LIVE_MARK = ":live"


async def lock_claims(
    session: AsyncSession, owner_id: str, now: datetime, *, max_per_user: int, max_total: int
) -> None:
    """On PostgreSQL, take the claim locks a claim for ``owner_id`` needs: the owner's when the owner
    is within ``CLAIM_LOCK_MARGIN`` of its limit, the global one when everyone is within it of theirs.
    (SQLite has one writer at a time anyway.) A lock that serialised every claim made claims of 64
    concurrent runs wait on each other 72 % of the time (bench/workflow_runs.py)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    mine, total = await running_counts(session, [owner_id], now)
    # Always the owner's lock before the global one (as the engine's claim takes them): no deadlock.
    if mine[owner_id] >= max_per_user - CLAIM_LOCK_MARGIN:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:lock, hashtext(:owner))"),
            {"lock": OWNER_CLAIMS_LOCK, "owner": owner_id},
        )
    if total >= max_total - CLAIM_LOCK_MARGIN:
        await lock_all_claims(session)


async def running_counts(
    session: AsyncSession, owner_ids: Collection[str], now: datetime
) -> tuple[dict[str, int], int]:
    """Runs held by a worker right now: per owner (of these) and in all."""
    held = and_(WorkflowRun.status == "running", WorkflowRun.lease_owner.is_not(None), WorkflowRun.due_at > now)
    rows = await session.execute(select(WorkflowRun.owner_id, func.count()).where(held).group_by(WorkflowRun.owner_id))
    counts = {owner: int(count) for owner, count in rows.all()}
    return {owner: counts.get(owner, 0) for owner in owner_ids}, sum(counts.values())


async def insert_runs(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(RUNS.insert(), list(rows))


async def claim_many(
    session: AsyncSession,
    run_ids: Sequence[str],
    *,
    worker: str,
    now: datetime,
    lease_until: datetime,
    max_per_user: int,
    max_total: int,
) -> list[WorkflowRun]:
    """Take those of ``run_ids`` that are due (queued, woken, retry due or lease expired) for
    ``worker``, oldest first, as far as the concurrency limits allow; the runs as claimed.

    Counting the runs held is exact for an owner whose claim lock is held: on PostgreSQL every claim
    takes its owners' locks (in a fixed order), and the global lock when the total is within
    ``CLAIM_LOCK_MARGIN`` of its limit (uncommitted claims of other owners are not counted: the
    margin must exceed the claims in flight at once, which claim groups of at most
    ``CLAIM_GROUP_MAX`` keep small). On SQLite this process is the one writer."""
    due = (
        await session.execute(
            select(RUNS.c.id, RUNS.c.owner_id)
            .where(RUNS.c.id.in_(run_ids), RUNS.c.status.in_(ACTIVE), RUNS.c.due_at <= now)
            .order_by(RUNS.c.due_at, RUNS.c.id)
        )
    ).all()
    if not due:
        return []
    owners = sorted({owner for _, owner in due})
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        for owner in owners:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:lock, hashtext(:owner))"),
                {"lock": OWNER_CLAIMS_LOCK, "owner": owner},
            )
    mine, total = await running_counts(session, owners, now)
    if postgres and total + len(due) + CLAIM_LOCK_MARGIN >= max_total:
        await lock_all_claims(session)
        mine, total = await running_counts(session, owners, now)
    chosen: list[str] = []
    for run_id, owner in due:
        if mine[owner] < max_per_user and total < max_total:
            chosen.append(run_id)
            mine[owner] += 1
            total += 1
    if not chosen:
        return []
    rows = await session.execute(
        update(RUNS)
        .where(RUNS.c.id.in_(chosen), RUNS.c.status.in_(ACTIVE), RUNS.c.due_at <= now)
        .values(
            status="running",
            lease_owner=worker,
            lease_epoch=RUNS.c.lease_epoch + 1,
            due_at=lease_until,
            started_at=func.coalesce(RUNS.c.started_at, now),
            updated_at=now,
        )
        .returning(*RUNS.c)
    )
    return [WorkflowRun(**row._mapping) for row in rows]


async def steps_of_runs(session: AsyncSession, run_ids: Collection[str]) -> dict[str, list[WorkflowStep]]:
    found: dict[str, list[WorkflowStep]] = {run_id: [] for run_id in run_ids}
    if run_ids:
        for step in (await session.execute(select(WorkflowStep).where(WorkflowStep.run_id.in_(run_ids)))).scalars():
            found[step.run_id].append(step)
    return found


async def lock_all_claims(session: AsyncSession) -> None:
    """PostgreSQL: the global claim lock, for claims near ``max_running_total``."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:lock, 0)"), {"lock": ALL_CLAIMS_LOCK})


async def backdate_new_run(session: AsyncSession, run_id: str, due_at: datetime) -> None:
    """Make a run that was never claimed due from ``due_at`` (see ``due_runs``' ``nudged_after``)."""
    await session.execute(
        update(WorkflowRun)
        .where(WorkflowRun.id == run_id, WorkflowRun.status == "queued", WorkflowRun.lease_epoch == 0)
        .values(due_at=due_at)
    )


async def next_due(session: AsyncSession) -> datetime | None:
    """When the next unfinished run falls due (a lease runs out, a wait ends, a backoff passes)."""
    row = await session.execute(select(func.min(WorkflowRun.due_at)).where(WorkflowRun.status.in_(ACTIVE)))
    return row.scalar()


async def queue_depth(session: AsyncSession, now: datetime) -> int:
    """Runs queued and due, waiting for a worker (the metric history's ``workflow.queue_depth``)."""
    row = await session.execute(
        select(func.count()).select_from(WorkflowRun).where(WorkflowRun.due_at <= now, WorkflowRun.status == "queued")
    )
    return int(row.scalar() or 0)


async def due_runs(
    session: AsyncSession, now: datetime, limit: int, *, nudged_after: datetime | None = None
) -> list[str]:
    """Runs due now, oldest first. ``nudged_after``: leave out runs never claimed yet that were
    queued after it (their nudge is on its way to a worker; a poll taking them too would only race
    it)."""
    due = select(WorkflowRun.id).where(WorkflowRun.due_at <= now, WorkflowRun.status.in_(ACTIVE))
    if nudged_after is not None:
        due = due.where(
            ~and_(WorkflowRun.status == "queued", WorkflowRun.lease_epoch == 0, WorkflowRun.due_at > nudged_after)
        )
    rows = await session.execute(due.order_by(WorkflowRun.due_at).limit(limit))
    return list(rows.scalars())


async def renew(
    session: AsyncSession, worker: str, held: Mapping[str, int], now: datetime, lease_until: datetime
) -> set[str]:
    """Extend the leases this worker still holds; returns the run ids it no longer holds."""
    if not held:
        return set()
    result = await session.execute(
        update(WorkflowRun)
        .where(
            WorkflowRun.lease_owner == worker,
            WorkflowRun.status == "running",
            tuple_(WorkflowRun.id, WorkflowRun.lease_epoch).in_(list(held.items())),
        )
        .values(due_at=lease_until)
        .returning(WorkflowRun.id)
        .execution_options(synchronize_session=False)
    )
    renewed = set(result.scalars())
    return set(held) - renewed


async def free_live_owners(session: AsyncSession, me: str, now: datetime) -> list[str]:
    """PostgreSQL: the live-marked workers (``liveness``) other than ``me`` that hold unexpired leases
    but not their liveness lock: dead, or (briefly) reconnecting. One statement: the lock is tried
    per distinct owner (PostgreSQL does not push a volatile condition into the subquery), and the
    keys it took stay locked by this transaction until it ends, so none of them can take its lock
    back meanwhile."""
    owners = (
        select(WorkflowRun.lease_owner.label("owner"))
        .distinct()
        .where(
            WorkflowRun.status == "running",
            WorkflowRun.due_at > now,
            WorkflowRun.lease_owner.like(f"%{LIVE_MARK}"),
            WorkflowRun.lease_owner != me,
        )
        .subquery()
    )
    lock_is_free = func.pg_try_advisory_xact_lock(WORKER_ALIVE_LOCK, func.hashtext(owners.c.owner), type_=Boolean)
    rows = await session.execute(select(owners.c.owner).where(lock_is_free).order_by(owners.c.owner))
    return list(rows.scalars())


async def release_runs_of(session: AsyncSession, owners: Collection[str], now: datetime) -> dict[str, int]:
    """Make the unexpired leases of dead ``owners`` due now; {owner: runs released}."""
    rows = await session.execute(
        update(WorkflowRun)
        .where(WorkflowRun.status == "running", WorkflowRun.lease_owner.in_(list(owners)), WorkflowRun.due_at > now)
        .values(due_at=now)
        .returning(WorkflowRun.lease_owner)
        .execution_options(synchronize_session=False)
    )
    return dict(Counter(owner for owner in rows.scalars() if owner))


async def cancel_requested(session: AsyncSession, run_ids: Collection[str]) -> set[str]:
    if not run_ids:
        return set()
    rows = await session.execute(
        select(WorkflowRun.id).where(WorkflowRun.id.in_(list(run_ids)), WorkflowRun.cancel_requested.is_(True))
    )
    return set(rows.scalars())


async def children(session: AsyncSession, run_id: str) -> list[str]:
    rows = await session.execute(
        select(WorkflowRun.id).where(WorkflowRun.parent_run_id == run_id, WorkflowRun.status.in_(ACTIVE))
    )
    return list(rows.scalars())


async def waiting_for_hook(session: AsyncSession, run_id: str, hook_id: str) -> WorkflowStep | None:
    rows = await session.execute(
        select(WorkflowStep).where(WorkflowStep.run_id == run_id, WorkflowStep.status == "waiting")
    )
    for step in rows.scalars():
        if (step.suspend or {}).get("hook_id") == hook_id and step.resume is None:
            return step
    return None


async def wake(session: AsyncSession, run_id: str, now: datetime) -> None:
    """Make a waiting run due now (a hook arrived, a child ended)."""
    await session.execute(
        update(WorkflowRun)
        .where(WorkflowRun.id == run_id, WorkflowRun.status == "waiting")
        .values(due_at=now, updated_at=now)
    )


async def delete_ended_before(session: AsyncSession, moment: datetime, limit: int) -> int:
    ids = (
        (
            await session.execute(
                select(WorkflowRun.id)
                .where(WorkflowRun.status.in_(ENDED), WorkflowRun.finished_at < moment)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    if not ids:
        return 0
    await session.execute(delete(WorkflowEvent).where(WorkflowEvent.run_id.in_(ids)))
    await session.execute(delete(WorkflowStep).where(WorkflowStep.run_id.in_(ids)))
    await session.execute(delete(WorkflowRun).where(WorkflowRun.id.in_(ids)))
    return len(ids)


# Hooks and n8n connections -------------------------------------------------------------------------


async def hooks_of(session: AsyncSession, owner_id: str) -> list[WorkflowHook]:
    rows = await session.execute(
        select(WorkflowHook).where(WorkflowHook.owner_id == owner_id).order_by(WorkflowHook.created_at)
    )
    return list(rows.scalars())


async def record_delivery(session: AsyncSession, hook_id: str, signature: str, now: datetime) -> bool:
    """Remember an accepted signature; False if it was seen before (a replay)."""
    seen = await session.get(WorkflowHookDelivery, (hook_id, signature))
    if seen is not None:
        return False
    session.add(WorkflowHookDelivery(hook_id=hook_id, signature=signature, received_at=now))
    await session.flush()
    return True


async def forget_deliveries_before(session: AsyncSession, moment: datetime) -> None:
    await session.execute(delete(WorkflowHookDelivery).where(WorkflowHookDelivery.received_at < moment))


async def n8n_connection(session: AsyncSession, owner_id: str, name: str) -> N8nConnection | None:
    rows = await session.execute(
        select(N8nConnection).where(N8nConnection.owner_id == owner_id, N8nConnection.name == name)
    )
    return rows.scalar_one_or_none()


async def n8n_connections(session: AsyncSession, owner_id: str) -> list[N8nConnection]:
    rows = await session.execute(
        select(N8nConnection).where(N8nConnection.owner_id == owner_id).order_by(N8nConnection.name)
    )
    return list(rows.scalars())


# Batched reads (doors that load many runs' parts at once: GraphQL's loaders) -----------------------


async def versions_by_keys(
    session: AsyncSession, owner_id: str | None, keys: Collection[tuple[str, int]]
) -> list[tuple[Workflow, WorkflowVersion]]:
    """The owner's workflows (deleted ones included: runs keep their version) with the versions
    named by ``(workflow_id, version)``, in one query (``owner_id=None``: any owner's)."""
    if not keys:
        return []
    statement = (
        select(Workflow, WorkflowVersion)
        .join(WorkflowVersion, WorkflowVersion.workflow_id == Workflow.id)
        .where(tuple_(WorkflowVersion.workflow_id, WorkflowVersion.version).in_(list(keys)))
    )
    if owner_id is not None:
        statement = statement.where(Workflow.owner_id == owner_id)
    return [(row[0], row[1]) for row in (await session.execute(statement)).all()]


async def owned_steps_of_runs(
    session: AsyncSession, owner_id: str | None, run_ids: Collection[str]
) -> list[WorkflowStep]:
    """The steps of the owner's runs among ``run_ids``, in one query (``owner_id=None``: any owner's)."""
    if not run_ids:
        return []
    statement = (
        select(WorkflowStep)
        .join(WorkflowRun, WorkflowRun.id == WorkflowStep.run_id)
        .where(WorkflowStep.run_id.in_(list(run_ids)))
    )
    if owner_id is not None:
        statement = statement.where(WorkflowRun.owner_id == owner_id)
    return list((await session.execute(statement)).scalars())
