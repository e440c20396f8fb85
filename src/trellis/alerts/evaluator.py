"""The alert evaluator: exactly one replica at a time evaluates every enabled rule.

Each round (``[alerts] evaluate_seconds``) takes or renews the ``alerts-evaluator`` lease in the
database; a replica that does not hold it does nothing. The holder reads each rule's condition from
the metric history (``conditions.py``), moves its state

    inactive ─(holds)→ pending ─(held for ``for_seconds``)→ firing ─(stops holding)→ resolved
    pending ─(stops holding)→ inactive        resolved ─(holds)→ pending (or firing at once)

and writes the changes, with an event per change, in one transaction fenced by the lease's epoch (a
holder that lost its lease writes nothing). After the commit each event goes out live (the
``dashboard`` feed and the owner's ``user:<id>`` feed) and its webhook is delivered in the
background; events left pending by a replica that died are picked up by the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, update

from trellis.alerts import conditions
from trellis.alerts import repository as repo
from trellis.alerts.models import AlertRule
from trellis.alerts.notify import AlertNotifier
from trellis.alerts.schemas import AlertEventOut
from trellis.alerts.service import AlertService, event_row
from trellis.kit.clock import Clock
from trellis.kit.logging import get_logger
from trellis.metrics import repository as metrics_repo
from trellis.metrics.catalog import BY_NAME
from trellis.settings import AlertsSettings, MetricsSettings
from trellis.storage.database import Database

log = get_logger(__name__)

LEASE = "alerts-evaluator"
RULES = cast(Table, AlertRule.__table__)  # Core, for an executemany update by key
RETENTION_EVERY_SECONDS = 3600
Sleep = Callable[[float], Awaitable[None]]
Publish = Callable[[AlertEventOut], Awaitable[None]]


class LeaseLost(Exception):
    """Another replica took the evaluator lease during this round."""


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
            silenced = await repo.silenced_until(session, [r.id for r in rules], now)
            outcomes: dict[str, conditions.Outcome | None] = {}
            stamp = int(now.timestamp())
            for rule in rules:
                if not self._alerts.effective_enabled(rule):
                    outcomes[rule.id] = None
                    continue
                series = BY_NAME.get(rule.series)
                if series is None:
                    outcomes[rule.id] = conditions.Outcome(False, None, f"unknown series {rule.series}")
                    continue
                owner = metrics_repo.SYSTEM_OWNER if series.scope == "system" else rule.user_id
                window = int(rule.condition.get("window_seconds", 300))
                try:
                    outcomes[rule.id] = await conditions.evaluate(
                        session, series, owner, dict(rule.labels), dict(rule.condition), stamp, self._reading(window)
                    )
                except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
                    log.warning("alert_rule_failed", rule_id=rule.id, error=type(exc).__name__, detail=str(exc)[:200])
                    outcomes[rule.id] = conditions.Outcome(False, None, f"evaluation failed: {type(exc).__name__}")
        events, updates = self._transitions(rules, outcomes, silenced, now)
        try:
            async with self._db.transaction() as session:
                if not await metrics_repo.hold_lease(
                    session, LEASE, self.holder, self.epoch, now, self.settings.lease_seconds
                ):
                    raise LeaseLost
                if updates:
                    await session.execute(
                        update(RULES)
                        .where(RULES.c.id == bindparam("rule_id"))
                        .values(
                            state=bindparam("new_state"),
                            state_since=bindparam("new_since"),
                            value=bindparam("new_value"),
                            evaluated_at=bindparam("new_evaluated"),
                        ),
                        updates,
                    )
                session.add_all(events)
        except LeaseLost:
            log.info("alert_evaluator_lease_lost", holder=self.holder)
            self.epoch = None
            return None
        self.rounds += 1
        out = [AlertEventOut.of(event) for event in events]
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
        rules: list[AlertRule],
        outcomes: dict[str, conditions.Outcome | None],
        silenced: dict[str, datetime],
        now: datetime,
    ) -> tuple[list[Any], list[dict[str, Any]]]:
        events = []
        updates = []
        for rule in rules:
            outcome = outcomes.get(rule.id)
            state, since = rule.state, rule.state_since
            value = outcome.value if outcome is not None else None
            message = outcome.message if outcome is not None else "switched off"
            new_state = state
            if outcome is None:
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
                    if rule.id in silenced:
                        notify = "silenced"
                    elif self._alerts.webhook_of(rule) is not None:
                        notify = "pending"
                events.append(event_row(rule, state, new_state, now, value, message, notify))
                since = now
            if new_state != state or value != rule.value or outcome is not None:
                updates.append(
                    {
                        "rule_id": rule.id,
                        "new_state": new_state,
                        "new_since": since,
                        "new_value": value,
                        "new_evaluated": now if outcome is not None else rule.evaluated_at,
                    }
                )
        return events, updates

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
