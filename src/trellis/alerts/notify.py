"""Alert notifications: signed webhooks, delivered off the evaluator's loop.

A delivery is a JSON POST through the SSRF guard every user-supplied URL goes through
(``kit.outbound.OutboundClient``: addresses checked after resolving, pinned, each redirect hop
checked), signed as workflow hooks are (``X-Trellis-Timestamp``, ``X-Trellis-Signature: sha256=``
HMAC-SHA256 over ``<timestamp>.<body>``), so an n8n Webhook node or any receiver can verify it.
A 2xx is delivered; anything else (a refused connection, a timeout, a 5xx, a refused address) is
tried again with doubling backoff up to ``webhook_attempts``, then the event's notification is
marked failed with the last error — the alert itself keeps its state. Each attempt's count is
written to the event, so the history shows a delivery in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from trellis.alerts import repository as repo
from trellis.alerts.models import AlertEvent, AlertRule
from trellis.alerts.schemas import AlertEventOut
from trellis.alerts.service import AlertService
from trellis.kit.clock import Clock, utc_timestamp
from trellis.kit.errors import TrellisError
from trellis.kit.logging import get_logger
from trellis.kit.outbound import OutboundClient
from trellis.kit.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from trellis.settings import AlertsSettings
from trellis.storage.database import Database

log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Published = Callable[[AlertEventOut], Awaitable[None]]


def payload(event: AlertEvent, rule: AlertRule) -> dict[str, Any]:
    """What a receiver gets: the event (with its instance's ``labels``), and enough of the rule to act on it."""
    return {
        "type": "alert",
        "event": AlertEventOut.of(event).model_dump(mode="json", exclude={"notification"}),
        "rule": {
            "id": rule.id,
            "name": rule.name,
            "severity": rule.severity,
            "series": rule.series,
            "labels": rule.labels,
            "group_by": list(rule.group_by or []),
            "condition": rule.condition,
            "builtin": rule.builtin,
        },
    }


class AlertNotifier:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: AlertsSettings,
        alerts: AlertService,
        outbound: OutboundClient,
        *,
        sleep: Sleep = asyncio.sleep,
        on_outcome: Published | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._settings = settings
        self._alerts = alerts
        self._outbound = outbound
        self._sleep = sleep
        self.on_outcome = on_outcome
        self._tasks: dict[str, asyncio.Task[str]] = {}

    @property
    def in_flight(self) -> set[str]:
        return set(self._tasks)

    def submit(self, event_id: str) -> None:
        """Deliver an event's notification in the background (once per event in this process)."""
        if event_id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(event_id), name=f"alert-webhook-{event_id}")
        self._tasks[event_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(event_id, None))

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Stop delivering; events still pending are picked up by the next evaluator."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def deliver(self, event_id: str) -> str:
        """Send one event's webhook with retries; returns the final status (sent, failed, none)."""
        async with self._db.session() as session:
            event = await session.get(AlertEvent, event_id)
            rule = await session.get(AlertRule, event.rule_id) if event is not None else None
        if event is None or rule is None or event.notify_status != "pending":
            return "none"
        target = self._alerts.webhook_of(rule)
        if target is None:
            await self._record(event, "none", 0, None)
            return "none"
        url, secret = target
        body = json.dumps(payload(event, rule), separators=(",", ":"), ensure_ascii=False).encode()
        attempts = self._settings.webhook_attempts
        delay = self._settings.webhook_backoff_seconds
        error: str | None = None
        for attempt in range(1, attempts + 1):
            error = await self._attempt(url, secret, body)
            if error is None:
                await self._record(event, "sent", attempt, None)
                return "sent"
            log.warning("alert_webhook_failed", event_id=event.id, attempt=attempt, error=error[:200])
            if attempt < attempts:
                await self._record(event, "pending", attempt, error)
                await self._sleep(min(delay, self._settings.webhook_max_backoff_seconds))
                delay *= 2
        await self._record(event, "failed", attempts, error)
        return "failed"

    async def _attempt(self, url: str, secret: str | None, body: bytes) -> str | None:
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {"Content-Type": "application/json", "User-Agent": "trellis-alerts", TIMESTAMP_HEADER: timestamp}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        try:
            async with asyncio.timeout(self._settings.webhook_timeout_seconds):
                response = await self._outbound.request("POST", url, field="webhook_url", headers=headers, content=body)
        except TrellisError as exc:
            return exc.message
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _record(self, event: AlertEvent, status: str, attempts: int, error: str | None) -> None:
        at = self._clock.now() if status == "sent" else None
        async with self._db.transaction() as session:
            await repo.record_notification(session, event.id, status, attempts, error, at)
        event.notify_status, event.notify_attempts, event.notify_error, event.notified_at = status, attempts, error, at
        if self.on_outcome is not None and status != "pending":
            with contextlib.suppress(Exception):
                await self.on_outcome(AlertEventOut.of(event))


def timestamp_now(clock: Clock) -> str:
    return utc_timestamp(clock.now())
