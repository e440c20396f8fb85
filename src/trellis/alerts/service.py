"""``AlertService``: what every door calls for alerts — rules per owner (built-in ones for
administrators), their history of state changes, silences. Evaluation is ``evaluator.py``'s,
delivery ``notify.py``'s.

A rule has one state per label set (an *instance*, ``AlertInstance``), as Prometheus alerts do:
``group_by`` names the labels that tell its instances apart (``default_group_by``), the rule's own
state is the most urgent of its instances', and silences cover a whole rule or the instances whose
labels include their ``matchers``.

Visibility: a user sees and changes their own rules, events and silences; another user's is a 404.
Administrators see everything, built-in rules included. A rule reads the metric history with its
owner's rights: usage series of its owner (administrators: any user's, or all summed), system
series only for administrators (403 otherwise).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from trellis.alerts import repository as repo
from trellis.alerts.defaults import builtin_rules, switched_off
from trellis.alerts.models import AlertEvent, AlertRule, AlertSilence
from trellis.alerts.schemas import (
    MAX_PAGE,
    STATE_RANK,
    AlertEventOut,
    AlertInstanceOut,
    AlertOut,
    AlertRuleCreate,
    AlertRuleCreated,
    AlertRuleOut,
    AlertRuleUpdate,
    EventFilters,
    SilenceCreate,
    SilenceOut,
)
from trellis.auth.schemas import Principal
from trellis.kit.clock import Clock, as_utc
from trellis.kit.cursor import decode_keyset, encode_keyset
from trellis.kit.errors import Conflict, NotFound, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.outbound import OutboundClient
from trellis.kit.secretbox import SecretBox
from trellis.metrics.catalog import BY_NAME, SeriesDef
from trellis.metrics.service import MetricsService
from trellis.settings import AlertsSettings
from trellis.storage.database import Database

Publish = Callable[[AlertEventOut], Awaitable[None]]


def _rule_not_found(rule_id: str) -> NotFound:
    return NotFound("alert rule not found", details={"rule_id": rule_id})


def default_group_by(series: SeriesDef, labels: dict[str, str], condition: dict[str, Any]) -> list[str]:
    """A rule's instances when it does not say: one per value of every label its filters leave
    open, for threshold and rate conditions (a breaker per endpoint, requests per status). A ratio
    compares part of the data with the whole, and grouping by the labels that split them would make
    every ratio 0 or 1; an absence rule grouped by every label would fire for each label set ever
    seen that went quiet: both judge the whole unless ``group_by`` is given."""
    if condition["type"] in ("ratio", "absence"):
        return []
    return [name for name in series.labels if name not in labels]


def silence_end(silences: list[AlertSilence], rule_id: str, labels: dict[str, str] | None) -> datetime | None:
    """The end of the longest of ``silences`` covering this rule's instance with ``labels`` (None:
    the whole rule, i.e. silences without matchers)."""
    ends = [
        s.ends_at
        for s in silences
        if s.rule_id == rule_id
        and (
            not s.matchers
            if labels is None
            else all(labels.get(name) == value for name, value in (s.matchers or {}).items())
        )
    ]
    return max(ends) if ends else None


class AlertService:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: AlertsSettings,
        metrics: MetricsService,
        outbound: OutboundClient,
        secret_box: SecretBox,
    ) -> None:
        self._db = database
        self._clock = clock
        self.settings = settings
        self._metrics = metrics
        self._outbound = outbound
        self._box = secret_box
        self._builtins_ready = False

    # --- built-in rules ------------------------------------------------------------------------------

    async def ensure_builtin_rules(self) -> None:
        """Create the built-in rules that do not exist yet (idempotent, any replica)."""
        if self._builtins_ready:
            return
        now = self._clock.now()
        async with self._db.transaction() as session:
            have = await repo.builtin_names(session)
            for rule in builtin_rules(self.settings):
                if rule.builtin in have:
                    continue
                session.add(
                    AlertRule(
                        id=rule.id,
                        owner_id=None,
                        builtin=rule.builtin,
                        name=rule.name,
                        description=rule.description,
                        series=rule.series,
                        labels={},
                        group_by=list(rule.group_by),
                        user_id=None,
                        condition=rule.condition,
                        for_seconds=rule.for_seconds,
                        severity=rule.severity,
                        enabled=True,
                        webhook_url=None,
                        webhook_secret=None,
                        state="inactive",
                        state_since=now,
                        value=None,
                        evaluated_at=None,
                        created_at=now,
                        updated_at=now,
                    )
                )
        self._builtins_ready = True

    def effective_enabled(self, rule: AlertRule) -> bool:
        return rule.enabled and not switched_off(self.settings, rule.builtin)

    # --- rules ------------------------------------------------------------------------------------------

    def _visible(self, actor: Principal, rule: AlertRule | None, rule_id: str) -> AlertRule:
        if rule is None or not (actor.is_admin or (rule.owner_id is not None and rule.owner_id == actor.user_id)):
            raise _rule_not_found(rule_id)
        return rule

    async def _out(self, rules: list[AlertRule]) -> list[AlertRuleOut]:
        ids = [r.id for r in rules]
        async with self._db.session() as session:
            silences = await repo.active_silences(session, ids, self._clock.now())
            rows = await repo.instances(session, ids)
        by_rule: dict[str, list[AlertInstanceOut]] = {}
        for row in sorted(rows, key=lambda r: (-STATE_RANK.get(r.state, 0), r.labels_key)):
            by_rule.setdefault(row.rule_id, []).append(
                AlertInstanceOut.of(row, silenced_until=silence_end(silences, row.rule_id, dict(row.labels)))
            )
        return [
            AlertRuleOut.of(
                rule,
                enabled=self.effective_enabled(rule),
                silenced_until=silence_end(silences, rule.id, None),
                instances=by_rule.get(rule.id, []),
            )
            for rule in rules
        ]

    async def _check(
        self,
        actor: Principal,
        series_name: str,
        labels: dict[str, str],
        user_id: str | None,
        condition: dict[str, Any],
        group_by: list[str] | None = None,
    ) -> tuple[SeriesDef, str | None]:
        series = self._metrics.definition(actor, series_name, location="body")
        allowed = ", ".join(series.labels) or "none"
        for name in labels:
            if name not in series.labels:
                raise ValidationFailed.of("labels", f"{series.name} has no label {name[:64]!r} (its labels: {allowed})")
        for name in group_by or []:
            if name not in series.labels:
                raise ValidationFailed.of(
                    "group_by", f"{series.name} has no label {name[:64]!r} to group by (its labels: {allowed})"
                )
        if group_by is not None and len(set(group_by)) != len(group_by):
            raise ValidationFailed.of("group_by", "a label is named twice")
        if group_by and condition["type"] == "ratio":
            for name in condition["numerator"]:
                if name in group_by:
                    raise ValidationFailed.of(
                        "group_by",
                        f"{name[:64]!r} splits the ratio's numerator from the whole: grouped by it, every ratio "
                        "would be 0 or 1",
                    )
        watched: str | None = None
        if series.scope == "usage":
            if actor.is_admin:
                watched = user_id
            elif user_id is not None and user_id != actor.user_id:
                raise NotFound("no usage for that user", details={"user_id": user_id})
            else:
                watched = actor.user_id
        elif user_id is not None:
            raise ValidationFailed.of("user_id", f"{series.name} is a system series: it has no user")
        kind = condition["type"]
        if kind == "threshold":
            fn = condition.get("fn") or series.default_fn
            if fn not in series.fns:
                raise ValidationFailed.of(
                    "condition.fn", f"{series.name} is a {series.kind}: fn is one of {', '.join(series.fns)}"
                )
        elif kind == "rate" and series.kind == "gauge":
            raise ValidationFailed.of(
                "condition.type", f"{series.name} is a gauge: a rate needs a counter or histogram"
            )
        elif kind == "ratio":
            if series.kind != "counter":
                raise ValidationFailed.of(
                    "condition.type", f"{series.name} is a {series.kind}: a ratio needs a counter"
                )
            for name in condition["numerator"]:
                if name not in series.labels:
                    raise ValidationFailed.of("condition.numerator", f"{series.name} has no label {name[:64]!r}")
        return series, watched

    async def _check_webhook(self, url: str | None) -> None:
        if url is not None:
            await self._outbound.check(url, field="webhook_url")

    async def create_rule(self, actor: Principal, body: AlertRuleCreate) -> AlertRuleCreated:
        condition = body.condition.model_dump(exclude_none=True)
        series, watched = await self._check(actor, body.series, body.labels, body.user_id, condition, body.group_by)
        group_by = (
            list(body.group_by) if body.group_by is not None else default_group_by(series, body.labels, condition)
        )
        await self._check_webhook(body.webhook_url)
        secret = secrets.token_urlsafe(32) if body.webhook_url else None
        now = self._clock.now()
        rule = AlertRule(
            id=new_id("alr"),
            owner_id=actor.user_id,
            builtin=None,
            name=body.name,
            description=body.description,
            series=body.series,
            labels=dict(body.labels),
            group_by=group_by,
            user_id=watched,
            condition=condition,
            for_seconds=body.for_seconds,
            severity=body.severity,
            enabled=body.enabled,
            webhook_url=body.webhook_url,
            webhook_secret=self._box.encrypt(secret) if secret else None,
            state="inactive",
            state_since=now,
            value=None,
            evaluated_at=None,
            created_at=now,
            updated_at=now,
        )
        async with self._db.transaction() as session:
            if await repo.count_owned(session, actor.user_id) >= self.settings.max_rules_per_owner:
                raise Conflict(
                    f"you have {self.settings.max_rules_per_owner} alert rules, the most allowed",
                    details={"max_rules": self.settings.max_rules_per_owner},
                )
            session.add(rule)
        out = (await self._out([rule]))[0]
        return AlertRuleCreated(**out.model_dump(), webhook_secret=secret)

    async def list_rules(self, actor: Principal, *, states: tuple[str, ...] = ()) -> list[AlertRuleOut]:
        if actor.is_admin:
            await self.ensure_builtin_rules()
        async with self._db.session() as session:
            rules = await repo.rules(session, actor.user_id, everyone=actor.is_admin)
        if states:
            rules = [rule for rule in rules if rule.state in states]
        return await self._out(rules)

    async def alerts_now(self, actor: Principal, *, states: tuple[str, ...] = ("pending", "firing")) -> list[AlertOut]:
        """The instances of the rules ``actor`` sees that are in ``states``, most urgent first."""
        if actor.is_admin:
            await self.ensure_builtin_rules()
        now = self._clock.now()
        async with self._db.session() as session:
            rules = {r.id: r for r in await repo.rules(session, actor.user_id, everyone=actor.is_admin)}
            rows = await repo.instances(session, list(rules), states)
            silences = await repo.active_silences(session, list(rules), now)
        out = []
        for row in rows:
            rule = rules[row.rule_id]
            if not self.effective_enabled(rule):
                continue
            base = AlertInstanceOut.of(row, silenced_until=silence_end(silences, row.rule_id, dict(row.labels)))
            out.append(
                AlertOut(
                    **base.model_dump(),
                    rule_name=rule.name,
                    severity=rule.severity,
                    series=rule.series,
                    builtin=rule.builtin,
                )
            )
        out.sort(key=lambda a: (-STATE_RANK[a.state], a.state_since, a.rule_id))
        return out

    async def get_rule(self, actor: Principal, rule_id: str) -> AlertRuleOut:
        async with self._db.session() as session:
            rule = self._visible(actor, await repo.rule_by_id(session, rule_id), rule_id)
        return (await self._out([rule]))[0]

    async def update_rule(self, actor: Principal, rule_id: str, body: AlertRuleUpdate) -> AlertRuleCreated:
        sent = body.model_fields_set
        secret: str | None = None
        async with self._db.transaction() as session:
            rule = self._visible(actor, await repo.rule_by_id(session, rule_id), rule_id)
            labels = dict(body.labels) if "labels" in sent and body.labels is not None else dict(rule.labels)
            condition = body.condition.model_dump(exclude_none=True) if body.condition is not None else rule.condition
            group_by = list(body.group_by) if body.group_by is not None else list(rule.group_by or [])
            if body.condition is not None or "labels" in sent or body.group_by is not None:
                await self._check(actor, rule.series, labels, rule.user_id, condition, group_by)
            if "webhook_url" in sent:
                if rule.builtin is not None:
                    raise ValidationFailed.of(
                        "webhook_url", "built-in rules notify [alerts] webhook_url (a setting), not their own"
                    )
                await self._check_webhook(body.webhook_url)
                rule.webhook_url = body.webhook_url
                secret = secrets.token_urlsafe(32) if body.webhook_url else None
                rule.webhook_secret = self._box.encrypt(secret) if secret else None
            rule.labels = labels
            rule.condition = condition
            # A changed grouping names other label sets: the old instances are no longer in the
            # data at the next evaluation and resolve (firing ones notify that they did).
            rule.group_by = group_by
            for name in ("name", "description", "for_seconds", "severity", "enabled"):
                if name in sent and (getattr(body, name) is not None or name == "description"):
                    setattr(rule, name, getattr(body, name))
            rule.updated_at = self._clock.now()
        out = (await self._out([rule]))[0]
        return AlertRuleCreated(**out.model_dump(), webhook_secret=secret)

    async def delete_rule(self, actor: Principal, rule_id: str) -> None:
        async with self._db.transaction() as session:
            rule = self._visible(actor, await repo.rule_by_id(session, rule_id), rule_id)
            if rule.builtin is not None:
                raise Conflict(
                    "a built-in rule cannot be deleted: switch it off (enabled: false)",
                    details={"rule_id": rule_id, "builtin": rule.builtin},
                )
            await session.delete(rule)

    # --- events -----------------------------------------------------------------------------------------

    async def events(self, actor: Principal, filters: EventFilters) -> tuple[list[AlertEventOut], str | None]:
        if not 1 <= filters.limit <= MAX_PAGE:
            message = f"limit must be between 1 and {MAX_PAGE}"
            raise ValidationFailed.of("limit", message, location="query", summary=message)
        since = as_utc(filters.since) if filters.since is not None else None
        until = as_utc(filters.until) if filters.until is not None else None
        if since is not None and until is not None and since >= until:
            raise ValidationFailed.of("since", "since must be earlier than until", location="query")
        after = decode_keyset(filters.cursor, order="alert_events") if filters.cursor else None
        async with self._db.session() as session:
            if filters.rule_id is not None:
                self._visible(actor, await repo.rule_by_id(session, filters.rule_id), filters.rule_id)
            rows = await repo.events_page(
                session,
                owner_id=actor.user_id,
                everyone=actor.is_admin,
                rule_id=filters.rule_id,
                to_state=filters.to_state,
                since=since,
                until=until,
                after=after,
                limit=filters.limit + 1,
            )
        next_cursor = None
        if len(rows) > filters.limit:
            rows = rows[: filters.limit]
            next_cursor = encode_keyset(rows[-1].at, rows[-1].id, order="alert_events")
        return [AlertEventOut.of(row) for row in rows], next_cursor

    # --- silences ---------------------------------------------------------------------------------------

    async def silence(self, actor: Principal, body: SilenceCreate) -> SilenceOut:
        now = self._clock.now()
        if (body.ends_at is None) == (body.duration_seconds is None):
            raise ValidationFailed.of("ends_at", "give either ends_at or duration_seconds")
        ends = as_utc(body.ends_at) if body.ends_at is not None else now + timedelta(seconds=body.duration_seconds or 0)
        if ends <= now:
            raise ValidationFailed.of("ends_at", "a silence must end in the future")
        async with self._db.transaction() as session:
            rule = self._visible(actor, await repo.rule_by_id(session, body.rule_id), body.rule_id)
            series = BY_NAME.get(rule.series)
            known = series.labels if series is not None else ()
            for name in body.matchers:
                if name not in known:
                    allowed = ", ".join(known) or "none"
                    raise ValidationFailed.of(
                        "matchers", f"{rule.series} has no label {name[:64]!r} (its labels: {allowed})"
                    )
            row = AlertSilence(
                id=new_id("sil"),
                rule_id=rule.id,
                matchers=dict(body.matchers),
                owner_id=rule.owner_id,
                created_by=actor.user_id,
                ends_at=ends,
                comment=body.comment,
                created_at=now,
            )
            session.add(row)
        return SilenceOut.of(row, now)

    async def silences(self, actor: Principal, *, active_only: bool = True) -> list[SilenceOut]:
        now = self._clock.now()
        async with self._db.session() as session:
            rows = await repo.silences(
                session, actor.user_id, everyone=actor.is_admin, active_at=now if active_only else None
            )
        return [SilenceOut.of(row, now) for row in rows]

    async def end_silence(self, actor: Principal, silence_id: str) -> SilenceOut:
        now = self._clock.now()
        async with self._db.transaction() as session:
            row = await session.get(AlertSilence, silence_id)
            if row is None or not (actor.is_admin or (row.owner_id is not None and row.owner_id == actor.user_id)):
                raise NotFound("silence not found", details={"silence_id": silence_id})
            if row.ends_at > now:
                row.ends_at = now
        return SilenceOut.of(row, now)

    # --- for the evaluator and the notifier --------------------------------------------------------------

    def webhook_of(self, rule: AlertRule) -> tuple[str, str | None] | None:
        """Where a rule's notifications go, and the key they are signed with."""
        if rule.builtin is not None:
            if self.settings.webhook_url is None:
                return None
            secret = self.settings.webhook_secret
            return self.settings.webhook_url, secret.get_secret_value() if secret else None
        if rule.webhook_url is None:
            return None
        return rule.webhook_url, self._box.decrypt(rule.webhook_secret) if rule.webhook_secret else None


def event_row(
    rule: AlertRule,
    labels: dict[str, str],
    from_state: str,
    to_state: str,
    at: datetime,
    value: float | None,
    message: str,
    notify: str,
) -> AlertEvent:
    return AlertEvent(
        id=new_id("ale"),
        rule_id=rule.id,
        owner_id=rule.owner_id,
        labels=dict(labels),
        rule_name=rule.name,
        severity=rule.severity,
        from_state=from_state,
        to_state=to_state,
        at=at,
        value=value,
        message=message,
        notify_status=notify,
        notify_attempts=0,
        notify_error=None,
        notified_at=None,
    )
