"""The alert evaluator: exactly one replica at a time evaluates every enabled rule.

Each round (``[alerts] evaluate_seconds``) takes or renews the ``alerts-evaluator`` lease in the
database; a replica that does not hold it does nothing. The holder reads each rule's condition from
the metric history (``conditions.py``), once per label set of its ``group_by``, and moves each label
set's state (its *instance*) on its own, with its own ``for`` timer:

    inactive ─(holds)→ pending ─(held for ``for_seconds``)→ firing ─(stops holding)→ resolved
    pending ─(stops holding)→ inactive        resolved ─(holds)→ pending (or firing at once)

A label set that is no longer in the data counts as not holding (a firing one resolves). Inactive
instances have no row; resolved ones are forgotten after ``[alerts] resolved_keep_seconds``. A
rule's own state is the most urgent of its instances'. The changes, with an event per instance
change, are written in one transaction fenced by the lease's epoch (a holder that lost its lease
writes nothing). After the commit each event goes out live (the
``dashboard`` feed and the owner's ``user:<id>`` feed) and its webhook is delivered in the
background; events left pending by a replica that died are picked up by the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trellis.alerts import conditions
from trellis.alerts import repository as repo
from trellis.alerts.models import AlertEvent, AlertInstance, AlertRule, AlertSilence
from trellis.alerts.notify import AlertNotifier
from trellis.alerts.schemas import STATE_RANK, AlertEventOut
from trellis.alerts.service import AlertService, event_row, silence_end
from trellis.kit.clock import Clock
from trellis.kit.ids import new_id
from trellis.kit.logging import get_logger
from trellis.metrics import repository as metrics_repo
from trellis.metrics.catalog import BY_NAME
from trellis.settings import AlertsSettings, MetricsSettings
from trellis.storage.database import Database

log = get_logger(__name__)

LEASE = "alerts-evaluator"
RETENTION_EVERY_SECONDS = 3600
Sleep = Callable[[float], Awaitable[None]]
Publish = Callable[[AlertEventOut], Awaitable[None]]


class LeaseLost(Exception):
    """Another replica took the evaluator lease during this round."""


@dataclass
class Changes:
    """What one round writes."""

    events: list[AlertEvent] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    added: list[AlertInstance] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class AlertEvaluator:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: AlertsSettings,
        metrics_settings: MetricsSettings,
        alerts: AlertService,
        notifier: AlertNotifier,
        *,
        holder: str,
        publish: Publish | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._db = database
        self._clock = clock
        self.settings = settings
        self._metrics_settings = metrics_settings
        self._alerts = alerts
        self.notifier = notifier
        self.holder = holder
        self._publish = publish
        self._sleep = sleep
        self.epoch: int | None = None
        self.rounds = 0
        self._next_retention = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def _reading(self, window: int) -> conditions.Reading:
        metrics = self._metrics_settings
        resolution = metrics.interval_seconds if window <= metrics.raw_retention_hours * 3600 else 60
        return conditions.Reading(resolution, metrics.gauge_heartbeat_seconds + resolution + metrics.interval_seconds)

    async def evaluate_once(self, now: datetime | None = None) -> list[AlertEventOut] | None:
        """One round: None when another replica holds the lease, else the events it wrote."""
        now = now or self._clock.now()
        async with self._db.transaction() as session:
            self.epoch = await metrics_repo.acquire_lease(session, LEASE, self.holder, now, self.settings.lease_seconds)
        if self.epoch is None:
            return None
        await self._alerts.ensure_builtin_rules()
        async with self._db.reader() as session:
            rules = await repo.rules(session, None, everyone=True)
            ids = [r.id for r in rules]
            silences = await repo.active_silences(session, ids, now)
            current: dict[str, dict[str, AlertInstance]] = {}
            for row in await repo.instances(session, ids):
                current.setdefault(row.rule_id, {})[row.labels_key] = row
            outcomes: dict[str, dict[str, conditions.Instance] | None] = {}
            stamp = int(now.timestamp())
            for rule in rules:
                if not self._alerts.effective_enabled(rule):
                    outcomes[rule.id] = None
                    continue
                series = BY_NAME.get(rule.series)
                if series is None:
                    outcomes[rule.id] = {}
                    continue
                owner = metrics_repo.SYSTEM_OWNER if series.scope == "system" else rule.user_id
                window = int(rule.condition.get("window_seconds", 300))
                try:
                    outcomes[rule.id] = await conditions.evaluate(
                        session,
                        series,
                        owner,
                        dict(rule.labels),
                        list(rule.group_by or []),
                        dict(rule.condition),
                        stamp,
                        self._reading(window),
                    )
                except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
                    log.warning("alert_rule_failed", rule_id=rule.id, error=type(exc).__name__, detail=str(exc)[:200])
                    failed = conditions.Outcome(False, None, f"evaluation failed: {type(exc).__name__}")
                    outcomes[rule.id] = {
                        key: conditions.Instance(dict(row.labels), failed)
                        for key, row in current.get(rule.id, {}).items()
                    }
        changes = Changes()
        for rule in rules:
            self._transitions(rule, outcomes.get(rule.id), current.get(rule.id, {}), silences, now, changes)
        try:
            async with self._db.transaction() as session:
                if not await metrics_repo.hold_lease(
                    session, LEASE, self.holder, self.epoch, now, self.settings.lease_seconds
                ):
                    raise LeaseLost
                await repo.update_states(session, AlertRule, changes.rules, key="rule_id")
                await repo.update_states(session, AlertInstance, changes.updated, key="instance_id")
                await repo.delete_instances(session, changes.removed)
                session.add_all(changes.added)
                session.add_all(changes.events)
        except LeaseLost:
            log.info("alert_evaluator_lease_lost", holder=self.holder)
            self.epoch = None
            return None
        self.rounds += 1
        out = [AlertEventOut.of(event) for event in changes.events]
        for event in out:
            if self._publish is not None:
                with contextlib.suppress(Exception):
                    await self._publish(event)
            if event.notification.status == "pending":
                self.notifier.submit(event.id)
        await self._resume_pending(now)
        await self._retention(now)
        return out

    def _transitions(
        self,
        rule: AlertRule,
        outcomes: dict[str, conditions.Instance] | None,
        current: dict[str, AlertInstance],
        silences: list[AlertSilence],
        now: datetime,
        changes: Changes,
    ) -> None:
        """Move each of the rule's label sets on its own, then the rule's summary."""
        keep = timedelta(seconds=self.settings.resolved_keep_seconds)
        gone = conditions.Outcome(False, None, "no longer in the data")
        off = conditions.Outcome(False, None, "switched off")
        # key -> (state after this round, value): what the rule's summary is made of.
        after: dict[str, tuple[str, float | None]] = {}
        for key in sorted(set(current) | set(outcomes or {})):
            row = current.get(key)
            seen = (outcomes or {}).get(key)
            labels = dict(row.labels) if row is not None else seen.labels if seen is not None else {}
            outcome = off if outcomes is None else seen.outcome if seen is not None else gone
            state = row.state if row is not None else "inactive"
            since = row.state_since if row is not None else now
            new_state = state
            if outcomes is None:
                new_state = "inactive"
            elif outcome.holds:
                if state in ("inactive", "resolved"):
                    new_state = "firing" if rule.for_seconds == 0 else "pending"
                elif state == "pending" and now - since >= timedelta(seconds=rule.for_seconds):
                    new_state = "firing"
            elif state == "pending":
                new_state = "inactive"
            elif state == "firing":
                new_state = "resolved"
            if new_state != state:
                notify = "none"
                if new_state == "firing" or (state == "firing" and new_state == "resolved"):
                    if silence_end(silences, rule.id, labels) is not None:
                        notify = "silenced"
                    elif self._alerts.webhook_of(rule) is not None:
                        notify = "pending"
                changes.events.append(
                    event_row(rule, labels, state, new_state, now, outcome.value, outcome.message, notify)
                )
                since = now
            after[key] = (new_state, outcome.value)
            forgotten = new_state == "resolved" and now - since >= keep
            if row is None:
                if new_state != "inactive":
                    changes.added.append(
                        AlertInstance(
                            id=new_id("ali"),
                            rule_id=rule.id,
                            labels_key=key,
                            labels=labels,
                            state=new_state,
                            state_since=since,
                            value=outcome.value,
                            evaluated_at=now,
                        )
                    )
            elif new_state == "inactive" or forgotten:
                changes.removed.append(row.id)
            elif new_state != state or outcome.value != row.value or outcomes is not None:
                changes.updated.append(
                    {
                        "instance_id": row.id,
                        "new_state": new_state,
                        "new_since": since,
                        "new_value": outcome.value,
                        "new_evaluated": now,
                    }
                )
        self._summary(rule, after, outcomes is not None, now, changes)

    @staticmethod
    def _summary(
        rule: AlertRule, after: dict[str, tuple[str, float | None]], evaluated: bool, now: datetime, changes: Changes
    ) -> None:
        """The rule's own state: the most urgent of its instances' (firing, pending, resolved,
        inactive), and the value of the first label set in that state."""
        state, value = "inactive", None
        for key in sorted(after):
            candidate, candidate_value = after[key]
            if STATE_RANK[candidate] > STATE_RANK[state] or (value is None and candidate == state):
                state, value = candidate, candidate_value
        since = rule.state_since if state == rule.state else now
        if state != rule.state or value != rule.value or evaluated:
            changes.rules.append(
                {
                    "rule_id": rule.id,
                    "new_state": state,
                    "new_since": since,
                    "new_value": value,
                    "new_evaluated": now if evaluated else rule.evaluated_at,
                }
            )

    async def _resume_pending(self, now: datetime) -> None:
        """Deliveries a replica left pending (it died, or stopped mid-retry) are taken over."""
        before = now - timedelta(seconds=2 * self.settings.evaluate_seconds)
        async with self._db.session() as session:
            pending = await repo.pending_notifications(session, before)
        for event in pending:
            if event.id not in self.notifier.in_flight:
                self.notifier.submit(event.id)

    async def _retention(self, now: datetime) -> None:
        if self._clock.monotonic() < self._next_retention:
            return
        self._next_retention = self._clock.monotonic() + RETENTION_EVERY_SECONDS
        async with self._db.transaction() as session:
            await repo.delete_events_before(session, now - timedelta(days=self.settings.events_retention_days))

    # --- the loop ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-evaluator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.notifier.close()
        if self.epoch is not None:
            with contextlib.suppress(Exception):
                async with self._db.transaction() as session:
                    await metrics_repo.release_lease(session, LEASE, self.holder, self._clock.now())
            self.epoch = None

    async def _run(self) -> None:
        while True:
            try:
                await self.evaluate_once()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("alert_evaluation_failed", error=type(exc).__name__, detail=str(exc)[:200])
            await self._sleep(self.settings.evaluate_seconds)
