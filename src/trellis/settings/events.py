"""``[events]``: the event bus that live doors (WebSocket, Server-Sent Events, GraphQL subscriptions)
listen to. In-process by default; Redis pub/sub when ``TRELLIS_REDIS_URL`` is set."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class EventsSettings(BaseModel):
    """The event bus (``[events]`` in trellis.toml, ``TRELLIS_EVENTS__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Messages a subscriber may fall behind by; one more and it is dropped ("slow consumer"), so a
    # slow client never stalls a publisher nor grows this process's memory without bound.
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1_000
    # Redis: the pub/sub connection is pinged when idle this long, and counted as lost when nothing
    # (not even the pong) came back within three times that.
    ping_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    # Redis: how soon a lost pub/sub connection is tried again, doubling up to the maximum.
    reconnect_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    max_reconnect_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    # Redis: how long a topic's last id is remembered after its last message (a client resuming
    # after longer gets a ``gap``).
    id_ttl_seconds: Annotated[int, Field(ge=60)] = 7 * 86_400
    # A live run stream (SSE, or a run topic on /ws) also reads the database this often, as a safety
    # net for a message lost between a publisher and Redis; while the bus reports itself unhealthy
    # it polls the database every ``poll_seconds`` instead.
    resync_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
