"""One ``/ws`` connection: authentication, the client's messages, the topics it follows, its AI
generations, its credential and its limits. A door: it parses and shapes; what it does is done by
services (``AuthService``, ``LiveEvents``, the gateway's ``tasks``).

Four tasks share the socket: the reader (client messages, answered in order), the pump (the
subscription's deliveries to the client; a run topic goes through its ``RunFeed``, so it is
exactly-once and in order whether an event came from the bus or the database), the guard (closes
with 4401 when the credential expires or access was taken away) and the heartbeat. Whatever ends
first ends them all: the socket is closed with its code and reason, the subscription released and
the connection's generations cancelled (which stops the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from fastapi import WebSocket
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from trellis.auth.schemas import Principal, Scope
from trellis.events.base import Delivery, Gap, SubscriptionClosed
from trellis.events.runs import RunFeed
from trellis.events.service import GENERATION_COMPLETE
from trellis.gateway import tasks
from trellis.gateway.schemas import ChatRequest, GenerateRequest
from trellis.gateway.service import CallContext
from trellis.kit.errors import (
    AuthenticationFailed,
    Conflict,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    TrellisError,
    Unavailable,
    ValidationFailed,
)
from trellis.kit.handlers import validation_failed
from trellis.kit.logging import get_logger
from trellis.ratelimit.base import take_or_refuse
from trellis.runtime import Runtime
from trellis.settings import RouteClass
from trellis.ws.schemas import (
    CLIENT_TYPES,
    CLOSE_FLOOD,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHENTICATED,
    AuthIn,
    PingIn,
    SubscribeIn,
    UnsubscribeIn,
    error_data,
    now_text,
    server_message,
)

log = get_logger(__name__)
_GENERATION_DONE = f'"component":"ai","event":"{GENERATION_COMPLETE}"'


class Closing(Exception):
    """Close the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]  # a close reason fits in 123 bytes


class ClientGone(Exception):
    pass


class TokenBucket:
    """Messages per second with a burst, on the runtime's monotonic clock."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._now = now
        self._at = now()

    def take(self) -> bool:
        now = self._now()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def _pydantic_failed(exc: ValidationError) -> ValidationFailed:
    """A pydantic error on a message, named like a REST body's fields."""
    return validation_failed(RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]))


def _client_id(raw: dict[str, Any]) -> int | str | None:
    value = raw.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and 0 < len(value) <= 64):
        return value
    return None


class Connection:
    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.ws = websocket
        self.runtime = runtime
        self.settings = runtime.settings.ws
        self.live = runtime.live
        self.principal: Principal | None = None
        self.subscription = runtime.bus.subscribe()
        self.feeds: dict[str, RunFeed] = {}
        self.generations: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()  # one writer at a time; held across a run topic's catch-up
        self._loop = asyncio.get_running_loop()
        self._last_sent = self._loop.time()
        self._bucket = TokenBucket(
            self.settings.messages_per_second, self.settings.message_burst, runtime.clock.monotonic
        )
        self._refused = 0
        self._handlers: dict[str, Callable[[int | str, dict[str, Any]], Awaitable[None]]] = {
            "auth": self._auth_again,
            "ping": self._ping,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "ai.generate": self._generate,
            "ai.chat": self._generate,
        }

    # -- the connection's life --------------------------------------------------------------------

    async def serve(self, ticket: str | None) -> None:
        await self.ws.accept()
        code, reason = CLOSE_NORMAL, ""
        try:
            self.principal = await (self._redeem(ticket) if ticket is not None else self._first_message())
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read())
                group.create_task(self._pump())
                group.create_task(self._guard())
                group.create_task(self._heartbeat())
        except* Closing as group:
            first = group.exceptions[0]
            assert isinstance(first, Closing)
            code, reason = first.code, first.reason
        except* (ClientGone, WebSocketDisconnect):
            code = -1  # nothing to close
        except* Exception as group:  # noqa: BLE001 - a bug: logged, the client told 1011, nothing leaks
            log.error("ws_connection_failed", error=repr(group.exceptions[0]))
            code, reason = 1011, "internal error"
        finally:
            for task in list(self.generations.values()):
                task.cancel()
            for task in list(self.generations.values()):
                with contextlib.suppress(BaseException):
                    await task
            await self.subscription.aclose()
        if code != -1 and self.ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)

    async def _redeem(self, ticket: str) -> Principal:
        try:
            principal = await self.runtime.auth.redeem_ticket(ticket)
        except AuthenticationFailed as exc:
            await self._send(self._reply("error", None, "auth", error_data(exc)))
            raise Closing(CLOSE_UNAUTHENTICATED, exc.message) from None
        except Exception as exc:  # noqa: BLE001 - the database is busy or away: try again later
            await self._unavailable(None, exc)
        await self._send(self._reply("ack", None, "auth", self._who(principal)))
        return principal

    async def _first_message(self) -> Principal:
        """Without a ticket the first message must be ``auth``, within ``[ws] auth_timeout_seconds``."""
        try:
            async with asyncio.timeout(self.settings.auth_timeout_seconds):
                text = await self._receive()
        except TimeoutError:
            exc = AuthenticationFailed("No auth message in time")
            await self._send(self._reply("error", None, "auth", error_data(exc)))
            raise Closing(CLOSE_UNAUTHENTICATED, exc.message) from None
        raw = self._parse(text)
        client_id = _client_id(raw) if isinstance(raw, dict) else None
        try:
            if not isinstance(raw, dict) or raw.get("type") != "auth":
                raise AuthenticationFailed(
                    'The first message must be {"type": "auth", "id": ..., "credential": ...}, '
                    "or connect with /ws?ticket=... (POST /api/v1/ws/ticket)"
                )
            try:
                message = AuthIn.model_validate(raw)
            except ValidationError as exc:
                raise AuthenticationFailed("The auth message needs an id and a credential") from exc
            principal = await self.runtime.auth.authenticate(message.credential)
        except AuthenticationFailed as exc:
            await self._send(self._reply("error", client_id, "auth", error_data(exc)))
            raise Closing(CLOSE_UNAUTHENTICATED, exc.message) from None
        except Exception as exc:  # noqa: BLE001 - the database is busy or away: try again later
            await self._unavailable(client_id, exc)
        await self._send(self._reply("ack", message.id, "auth", self._who(principal)))
        return principal

    async def _unavailable(self, client_id: Any, exc: Exception) -> NoReturn:
        log.warning("ws_auth_unavailable", error=type(exc).__name__)
        unavailable = Unavailable("Cannot check credentials right now: try again shortly")
        await self._send(self._reply("error", client_id, "auth", error_data(unavailable)))
        raise Closing(CLOSE_TRY_AGAIN, "try again later")

    @staticmethod
    def _who(principal: Principal) -> dict[str, Any]:
        return {
            "user_id": principal.user_id,
            "username": principal.username,
            "role": principal.role.value,
            "scopes": sorted(s.value for s in principal.scopes),
            "expires_at": principal.expires_at.isoformat() if principal.expires_at else None,
        }

    # -- sending ----------------------------------------------------------------------------------

    def _reply(self, type_: str, client_id: Any, event: str, data: Any, topic: str | None = None) -> str:
        return server_message(
            type_, event=event, data=data, timestamp=now_text(self.runtime.clock.now()), id=client_id, topic=topic
        )

    async def _send(self, text: str) -> None:
        async with self._lock:
            await self._send_locked(text)

    async def _send_locked(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise ClientGone from exc
        self._last_sent = self._loop.time()

    async def _error(self, client_id: Any, exc: TrellisError, event: str, topic: str | None = None) -> None:
        await self._send(self._reply("error", client_id, event, error_data(exc), topic))

    # -- the reader -------------------------------------------------------------------------------

    async def _receive(self) -> str | None:
        """The next client message as text (None for a binary one); the size limit applied."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        text: str | None = message.get("text")
        data: bytes | None = message.get("bytes")
        limit = self.settings.max_message_bytes
        size = len(data or b"") if text is None else len(text) if len(text) * 4 <= limit else len(text.encode())
        if size > limit:
            exc = PayloadTooLarge(
                f"A message may be at most {limit} bytes", details={"max_bytes": limit, "bytes": size}
            )
            await self._error(None, exc, "message")
            raise Closing(CLOSE_TOO_BIG, f"message over {limit} bytes")
        return text

    @staticmethod
    def _parse(text: str | None) -> Any:
        if text is None:
            return ValidationFailed.of("", "binary frames are not accepted: send JSON text", type="frame_type")
        try:
            return json.loads(text)
        except ValueError as exc:
            return ValidationFailed.of_fields(
                [{"field": "", "message": str(exc), "location": "body", "type": "json_invalid"}],
                summary="The message is not valid JSON",
            )

    async def _read(self) -> None:
        while True:
            raw = self._parse(await self._receive())
            client_id = _client_id(raw) if isinstance(raw, dict) else None
            if not self._bucket.take():
                self._refused += 1
                limited = RateLimited(
                    "Too many messages: slow down",
                    details={"messages_per_second": self.settings.messages_per_second, "refused": self._refused},
                )
                await self._error(client_id, limited, "message")
                if self._refused >= self.settings.max_refused:
                    raise Closing(CLOSE_FLOOD, "too many messages")
                continue
            self._refused = 0
            await self._dispatch(raw, client_id)

    async def _dispatch(self, raw: Any, client_id: int | str | None) -> None:
        if isinstance(raw, ValidationFailed):
            await self._error(None, raw, "message")
            return
        if not isinstance(raw, dict):
            await self._error(None, ValidationFailed.of("", "a message is a JSON object", type="model_type"), "message")
            return
        kind = raw.get("type")
        event = kind if isinstance(kind, str) and kind in CLIENT_TYPES else "message"
        if client_id is None:
            missing = ValidationFailed.of(
                "id", "every message needs an id: a string of 1 to 64 characters, or an integer", type="missing"
            )
            await self._error(None, missing, event)
            return
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            unknown = ValidationFailed.of(
                "type", f"unknown message type {kind!r}: one of {', '.join(CLIENT_TYPES)}", type="literal_error"
            )
            await self._error(client_id, unknown, event)
            return
        topic = raw.get("topic") if isinstance(raw.get("topic"), str) else None
        try:
            await handler(client_id, raw)
        except ValidationError as exc:
            await self._error(client_id, _pydantic_failed(exc), event, topic)
        except TrellisError as exc:
            await self._error(client_id, exc, event, topic)

    # -- client messages --------------------------------------------------------------------------

    async def _auth_again(self, client_id: int | str, raw: dict[str, Any]) -> None:
        raise Conflict("Already authenticated: open another connection to use another credential")

    async def _ping(self, client_id: int | str, raw: dict[str, Any]) -> None:
        PingIn.model_validate(raw)
        await self._send(self._reply("pong", client_id, "ping", {}))

    async def _subscribe(self, client_id: int | str, raw: dict[str, Any]) -> None:
        message = SubscribeIn.model_validate(raw)
        assert self.principal is not None
        topic = await self.live.authorize(self.principal, message.topic)
        name = topic.name
        if name in self.subscription.topics:
            await self._send(self._reply("ack", client_id, "subscribe", {"topic": name, "already": True}, name))
            return
        if len(self.subscription.topics) >= self.settings.max_subscriptions:
            raise Conflict(
                f"At most {self.settings.max_subscriptions} topics per connection: unsubscribe from one first",
                details={"max_subscriptions": self.settings.max_subscriptions},
            )
        async with self._lock:  # nothing of this topic goes out before its ack and its replay
            await self.subscription.add(name)
            feed: RunFeed | None = None
            gap: dict[str, Any] | None = None
            if topic.kind == "run":
                feed = self.feeds[name] = self.live.run_feed(self.principal, topic.key, message.last_id or 0)
            elif message.last_id is not None:
                last = await self.live.bus.last_id(name)
                if last != message.last_id:
                    reason = "unknown" if last is None else "reset" if last < message.last_id else "missed"
                    gap = {"reason": reason, "after": message.last_id, "last_id": last}
            await self._send_locked(self._reply("ack", client_id, "subscribe", {"topic": name}, name))
            if feed is not None:
                for delivery in await feed.catch_up():
                    await self._send_locked(delivery.frame)
            if gap is not None:
                await self._send_locked(self._gap(name, gap))

    async def _unsubscribe(self, client_id: int | str, raw: dict[str, Any]) -> None:
        message = UnsubscribeIn.model_validate(raw)
        was = message.topic in self.subscription.topics
        await self.subscription.remove(message.topic)
        self.feeds.pop(message.topic, None)
        data = {"topic": message.topic, "was_subscribed": was}
        await self._send(self._reply("ack", client_id, "unsubscribe", data, message.topic))

    async def _generate(self, client_id: int | str, raw: dict[str, Any]) -> None:
        assert self.principal is not None
        principal = self.principal
        if Scope.AI not in principal.scopes:
            raise PermissionDenied("This credential lacks the 'ai' scope", details={"scope": "ai"})
        fields = {key: value for key, value in raw.items() if key not in ("type", "id")}
        body: BaseModel
        if raw["type"] == "ai.generate":
            body = GenerateRequest.model_validate(fields)
        else:
            body = ChatRequest.model_validate(fields)
        if len(self.generations) >= self.settings.max_generations:
            raise RateLimited(
                f"At most {self.settings.max_generations} generations at once on one connection",
                details={"max_generations": self.settings.max_generations},
            )
        settings = self.runtime.settings
        if settings.rate_limit_enabled:
            rule = settings.rate_limits[principal.role][RouteClass.AI]
            await take_or_refuse(
                self.runtime.limiter, f"{RouteClass.AI.value}:{principal.rate_limit_subject}", rule, RouteClass.AI.value
            )
        gateway = self.runtime.gateway
        if isinstance(body, GenerateRequest):
            prepared = await tasks.prepare_generate(gateway, body)
        else:
            assert isinstance(body, ChatRequest)
            prepared = await tasks.prepare_chat(gateway, body)
        generation_id, topic = self.live.new_generation(principal)
        async with self._lock:
            await self.subscription.add(topic)
            data = {"generation_id": generation_id, "topic": topic}
            await self._send_locked(self._reply("ack", client_id, raw["type"], data, topic))
        ctx = CallContext(principal=principal, door="ws", request_id=generation_id, cache=body.cache)
        task = asyncio.create_task(self.live.generate(gateway, ctx, prepared, generation_id))
        self.generations[generation_id] = task
        task.add_done_callback(lambda done: self._generation_ended(generation_id, done))

    def _generation_ended(self, generation_id: str, task: asyncio.Task[None]) -> None:
        self.generations.pop(generation_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("ws_generation_failed", generation_id=generation_id, error=repr(task.exception()))

    # -- the pump ---------------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            async for item in self.subscription:
                async with self._lock:  # what queued meanwhile goes out under the same lock
                    await self._forward(item)
                    while (more := self.subscription.get_nowait()) is not None:
                        await self._forward(more)
        except SubscriptionClosed as exc:
            raise Closing(CLOSE_TRY_AGAIN, exc.detail) from None

    async def _forward(self, item: Delivery | Gap) -> None:
        """One delivery or gap to the client (the send lock held)."""
        if item.topic not in self.subscription.topics:
            return  # unsubscribed while it waited in the queue
        feed = self.feeds.get(item.topic)
        if isinstance(item, Gap):
            if feed is not None:  # a run: what was lost is in the database
                for delivery in await feed.catch_up():
                    await self._send_locked(delivery.frame)
            else:
                last = await self.live.bus.last_id(item.topic)
                await self._send_locked(self._gap(item.topic, {"reason": item.reason, "last_id": last}))
            return
        if feed is not None:
            for delivery in await feed.offer(item):
                await self._send_locked(delivery.frame)
            return
        await self._send_locked(item.frame)
        if item.topic.startswith("generation:") and _GENERATION_DONE in item.frame[:80]:
            await self.subscription.remove(item.topic)  # its last message went out

    def _gap(self, topic: str, data: dict[str, Any]) -> str:
        component = (
            "workflow" if topic.startswith(("run:", "user:")) else "ai" if topic.startswith("gen") else "dashboard"
        )
        return server_message(
            "gap",
            event="gap",
            data=data,
            timestamp=now_text(self.runtime.clock.now()),
            topic=topic,
            component=component,
        )

    # -- the guard and the heartbeat ---------------------------------------------------------------

    async def _guard(self) -> None:
        """Close (4401) once the credential has expired, or was revoked or its user disabled."""
        watch = self.runtime.access_watch
        seen = watch.generation
        while True:
            assert self.principal is not None
            latest = await watch.wait(seen, self.principal.expires_at)
            try:
                expires = self.principal.expires_at
                if expires is not None and expires <= self.runtime.clock.now():
                    raise AuthenticationFailed(
                        "Token has expired" if self.principal.via == "jwt" else "API key has expired"
                    )
                if latest != seen:
                    seen = latest
                    self.principal = await self.runtime.auth.revalidate(self.principal)
            except AuthenticationFailed as exc:
                await self._error(None, exc, "auth")
                raise Closing(CLOSE_UNAUTHENTICATED, exc.message) from None
            except Exception as exc:  # noqa: BLE001 - cannot check now (database busy or away): at the next change
                log.warning("ws_credential_check_failed", error=type(exc).__name__)

    async def _heartbeat(self) -> None:
        every = self.settings.heartbeat_seconds
        while True:
            idle = self._loop.time() - self._last_sent
            if idle >= every:
                await self._send(
                    server_message("ping", event="ping", data={}, timestamp=now_text(self.runtime.clock.now()))
                )
                continue
            await asyncio.sleep(every - idle)


async def serve(websocket: WebSocket, runtime: Runtime, ticket: str | None) -> None:
    await Connection(websocket, runtime).serve(ticket)
