"""Live events: what every live door (WebSocket, Server-Sent Events, later GraphQL subscriptions)
calls. Which topics a caller may follow, a run's events as one exactly-once stream (database, then
bus), and AI generations streamed to their own topic.

Topics:

* ``user:<user id>`` — the caller's own feed (their runs' events, with bus-assigned ids);
* ``run:<run id>`` — one of the caller's runs (ids are the run's event ``seq``: resumable from the
  database);
* ``generation:<generation id>`` — an AI generation the caller started (the id names its owner);
* ``dashboard`` — administrators: every run's start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trellis.auth.schemas import Principal, Scope
from trellis.events.base import (
    DASHBOARD,
    Delivery,
    EventBus,
    Gap,
    MessageType,
    SubscriptionClosed,
    generation_topic,
    message,
    run_topic,
)
from trellis.events.runs import RunFeed
from trellis.gateway import tasks
from trellis.gateway.service import CallContext, Gateway
from trellis.kit.clock import Clock, utc_timestamp
from trellis.kit.errors import NotFound, PermissionDenied, ValidationFailed
from trellis.kit.logging import get_logger
from trellis.settings import EventsSettings
from trellis.workflows.repository import ENDED
from trellis.workflows.service import WorkflowService

log = get_logger(__name__)

TopicKind = Literal["user", "run", "generation", "dashboard"]
RUN_PAGE = 500
GENERATION_START = "ai_generation_start"
GENERATION_PROGRESS = "ai_generation_progress"
GENERATION_COMPLETE = "ai_generation_complete"
MAX_TOPIC_CHARS = 200


@dataclass(frozen=True, slots=True)
class Topic:
    kind: TopicKind
    key: str  # the user, run or generation id ("" for the dashboard)
    name: str


def parse_topic(raw: object, *, field: str = "topic") -> Topic:
    """``user:<id>``, ``run:<id>``, ``generation:<id>`` or ``dashboard``; anything else is a 400."""
    if not isinstance(raw, str) or not raw:
        raise ValidationFailed.of(field, "must be a topic name such as 'run:<run id>'", type="string_type")
    if raw == DASHBOARD:
        return Topic("dashboard", "", raw)
    kind, sep, key = raw.partition(":")
    if not sep or kind not in ("user", "run", "generation") or not key or len(raw) > MAX_TOPIC_CHARS:
        raise ValidationFailed.of(
            field,
            "unknown topic: use user:<user id>, run:<run id>, generation:<generation id> or dashboard",
            type="value_error",
        )
    return Topic(kind, key, raw)  # type: ignore[arg-type]  # narrowed by the check above


def new_generation_id(owner_id: str) -> str:
    """A generation id that names its owner (so any replica can authorize its topic, with nothing
    stored): ``<owner id>.<random>``."""
    return f"{owner_id}.{secrets.token_hex(8)}"


def generation_owner(generation_id: str) -> str:
    return generation_id.rpartition(".")[0]


class LiveEvents:
    def __init__(
        self,
        bus: EventBus,
        workflows: WorkflowService,
        settings: EventsSettings,
        clock: Clock,
        *,
        runs_on_bus: bool = True,
    ) -> None:
        self.bus = bus
        self._clock = clock
        self._workflows = workflows
        self._settings = settings
        # False where run events cannot reach this process's bus (an in-process bus in an API
        # process whose runs execute in `trellis worker` processes): run streams poll instead.
        self.runs_on_bus = runs_on_bus

    # -- topics -----------------------------------------------------------------------------------

    async def authorize(self, actor: Principal, raw: object) -> Topic:
        """The topic, if ``actor`` may follow it: its own feed, runs and generations; administrators
        the dashboard and any user's run (``WorkflowService.run`` decides, as for the run's status).
        Another user's run or generation is a 404 (as on every door), another user's feed or the
        dashboard for a non-administrator a 403."""
        topic = parse_topic(raw)
        if Scope.READ not in actor.scopes:
            raise PermissionDenied("This credential lacks the 'read' scope", details={"scope": "read"})
        match topic.kind:
            case "user":
                if topic.key != actor.user_id:
                    raise PermissionDenied("You can follow only your own user feed", details={"topic": topic.name})
            case "dashboard":
                if not actor.is_admin:
                    raise PermissionDenied("The dashboard feed is for administrators", details={"topic": topic.name})
            case "run":
                await self._workflows.run(actor, topic.key)
            case "generation":
                if generation_owner(topic.key) != actor.user_id:
                    raise NotFound("generation not found", details={"generation_id": topic.key})
        return topic

    # -- runs -------------------------------------------------------------------------------------

    def run_feed(self, actor: Principal, run_id: str, last: int = 0) -> RunFeed:
        async def read_after(seq: int) -> Sequence[Any]:
            return await self._workflows.events(actor, run_id, after=seq, limit=RUN_PAGE)

        return RunFeed(read_after, last, page=RUN_PAGE)

    async def run_ended(self, actor: Principal, run_id: str) -> bool:
        return (await self._workflows.run(actor, run_id)).status in ENDED

    async def follow_run(self, actor: Principal, run_id: str, after: int = 0) -> AsyncIterator[Delivery]:
        """A run's events after ``after``, each once and in order, until the run has ended: the
        database first, then the bus (a hole or a gap is read back from the database). While the
        bus reports itself unhealthy the database is polled instead; a slow resync (``[events]
        resync_seconds``) guards against a message lost between another replica and Redis."""
        feed = self.run_feed(actor, run_id, after)
        async with self.bus.subscribe() as subscription:
            await subscription.add(run_topic(run_id))  # before reading: nothing falls in between
            for delivery in await feed.catch_up():
                yield delivery
            if await self.run_ended(actor, run_id):
                for delivery in await feed.catch_up():
                    yield delivery
                return
            while True:
                try:
                    batch = await self._next(feed, subscription)
                except SubscriptionClosed as exc:
                    log.info("run_stream_dropped", run_id=run_id, reason=exc.reason)
                    return  # the client resumes with the last id it saw
                for delivery in batch:
                    yield delivery
                if feed.ended and await self.run_ended(actor, run_id):
                    for delivery in await feed.catch_up():
                        yield delivery
                    return

    async def _next(self, feed: RunFeed, subscription: Any) -> list[Delivery]:
        if not self.runs_on_bus or not self.bus.health().ok:
            await asyncio.sleep(self._settings.poll_seconds)
            out: list[Delivery] = []
            while (item := subscription.get_nowait()) is not None:
                out += await feed.offer(item) if isinstance(item, Delivery) else []
            return out + await feed.catch_up()
        try:
            async with asyncio.timeout(self._settings.resync_seconds):
                item = await subscription.get()
        except TimeoutError:
            return await feed.catch_up()
        if isinstance(item, Gap):
            return await feed.catch_up()
        return await feed.offer(item)

    # -- generations ------------------------------------------------------------------------------

    def new_generation(self, actor: Principal) -> tuple[str, str]:
        """A generation id for ``actor`` and its topic (follow it before ``generate`` starts)."""
        generation_id = new_generation_id(actor.user_id)
        return generation_id, generation_topic(generation_id)

    async def generate(self, gateway: Gateway, ctx: CallContext, call: tasks.PreparedCall, generation_id: str) -> None:
        """Run a prepared call as a stream and publish it on ``generation:<id>`` in the seed's events:
        ``ai_generation_start``, ``ai_generation_progress`` per token delta, then
        ``ai_generation_complete`` (``complete`` with the usage, or ``error``). Cancelling the task
        that awaits this (the socket closed) closes the model's stream: the local model stops."""
        topic = generation_topic(generation_id)
        sequence = itertools.count(1)
        base = {"generation_id": generation_id}
        started = {**base, "kind": call.kind, "model": call.model_name}
        await self.bus.publish(topic, self._ai("update", GENERATION_START, started), id=next(sequence))
        index = 0
        async with contextlib.aclosing(tasks.stream_events(gateway, ctx, call)) as events:
            async for name, data in events:
                if name == "delta":
                    progress = {**base, "delta": data["text"], "index": index}
                    index += 1
                    await self.bus.publish(topic, self._ai("update", GENERATION_PROGRESS, progress), id=next(sequence))
                elif name == "done":
                    done = {**base, **data}
                    await self.bus.publish(topic, self._ai("complete", GENERATION_COMPLETE, done), id=next(sequence))
                else:
                    failed = {**base, "error": data}
                    await self.bus.publish(topic, self._ai("error", GENERATION_COMPLETE, failed), id=next(sequence))

    def _ai(self, type_: MessageType, event: str, data: dict[str, Any]) -> dict[str, Any]:
        return message(type_, "ai", event, data, utc_timestamp(self._clock.now()))
