"""The ``/ws`` protocol's shapes: client messages, server messages and close codes.

Every server message has the same keys, ``{type, component, event, data, timestamp, id, topic}``:

* a topic's event: the seed's ``type`` (``update`` | ``error`` | ``complete``), ``component`` (``ai`` |
  ``workflow`` | ``dashboard``) and ``event``; ``id`` grows per ``topic``;
* ``gap`` on a topic: messages were lost there and cannot be replayed (``data.reason``);
* a reply to a client message: ``ack`` or ``error`` (``data`` is the envelope's error object:
  ``{code, message, details}``) or ``pong``, with the client's own ``id`` and ``component: "ws"``;
  an ``error`` about a frame that could not be read at all has ``id: null``;
* ``ping``: the server's keepalive when it has sent nothing for a while.

Client messages are JSON objects with ``type`` and a client-chosen ``id`` (a string of at most 64
characters or an integer): ``auth`` ``{credential}``, ``subscribe`` ``{topic, last_id?}``,
``unsubscribe`` ``{topic}``, ``ping``, ``ai.generate`` and ``ai.chat`` (the REST door's fields:
``GenerateRequest`` and ``ChatRequest``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StringConstraints

from trellis.kit.clock import utc_timestamp
from trellis.kit.errors import TrellisError
from trellis.kit.requests import RequestModel

ClientId = StrictInt | Annotated[str, StringConstraints(min_length=1, max_length=64)]
CLIENT_TYPES = ("auth", "subscribe", "unsubscribe", "ping", "ai.generate", "ai.chat")

# Close codes (4000-4999 are the application's): mirrored on HTTP statuses where one fits.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009  # a message over [ws] max_message_bytes
CLOSE_TRY_AGAIN = 1013  # dropped as a slow consumer (the server's queue for it overflowed)
CLOSE_UNAUTHENTICATED = 4401  # no, bad, expired or revoked credential
CLOSE_FLOOD = 4429  # kept sending over the message rate after being told


class AuthIn(RequestModel):
    type: Literal["auth"]
    id: ClientId
    credential: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="An API key or a JWT."
    )


class SubscribeIn(RequestModel):
    type: Literal["subscribe"]
    id: ClientId
    topic: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    last_id: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="The last id seen on this topic: a run topic replays what follows it from the database "
        "(default: the run's whole history); another topic answers with a gap if messages were missed.",
    )


class UnsubscribeIn(RequestModel):
    type: Literal["unsubscribe"]
    id: ClientId
    topic: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PingIn(RequestModel):
    type: Literal["ping"]
    id: ClientId


def server_message(
    type_: str,
    *,
    event: str,
    data: Any,
    timestamp: str,
    id: Any = None,
    topic: str | None = None,
    component: str = "ws",
) -> str:
    return json.dumps(
        {
            "type": type_,
            "component": component,
            "event": event,
            "data": data,
            "timestamp": timestamp,
            "id": id,
            "topic": topic,
        },
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


def error_data(exc: TrellisError) -> dict[str, Any]:
    """The envelope's error object."""
    return {"code": exc.code, "message": exc.message, "details": exc.details}


def now_text(moment: Any) -> str:
    return utc_timestamp(moment)
