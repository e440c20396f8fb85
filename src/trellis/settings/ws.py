"""``[ws]``: the WebSocket door at ``/ws``: who may connect, how it authenticates, and its limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class WsSettings(BaseModel):
    """The WebSocket door (``[ws]`` in trellis.toml, ``TRELLIS_WS__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Browser origins allowed to open /ws (exact, e.g. "https://app.example.com"; "*" for any).
    # A page served by Trellis itself (Origin equal to the request's own host) is always allowed,
    # and so are clients that send no Origin (not browsers). The cors_origins are allowed too.
    allowed_origins: list[str] = Field(default_factory=list)
    # POST /api/v1/ws/ticket: how long a ticket may wait before it is used (once).
    ticket_ttl_seconds: Annotated[int, Field(ge=1, le=600)] = 30
    # Without a ticket, the first message must authenticate within this long.
    auth_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    # permessage-deflate on /ws (`trellis serve`). Off: live messages are small JSON, and compressing
    # one frame for each of a thousand subscribers cost a fifth of the server's CPU in bench/ws_fanout.py.
    compression: bool = False
    # The largest client message; a bigger one is answered with an error and the socket closed (1009).
    max_message_bytes: Annotated[int, Field(ge=256, le=16 * 1_048_576)] = 65_536
    # Client messages per second, with a burst; over it each message is refused, and after
    # ``max_refused`` refusals in a row the socket is closed (4429).
    messages_per_second: Annotated[float, Field(gt=0)] = 20.0
    message_burst: Annotated[int, Field(ge=1)] = 40
    max_refused: Annotated[int, Field(ge=1)] = 5
    # Topics one connection may follow at once, and AI generations it may run at once.
    max_subscriptions: Annotated[int, Field(ge=1, le=10_000)] = 200
    max_generations: Annotated[int, Field(ge=1, le=100)] = 4
    # The server sends {"type": "ping"} after this long without sending anything, so proxies that
    # close idle connections keep this one (uvicorn also sends protocol-level pings).
    heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = 25.0
    # How often this process reads the auth epoch for its long-lived connections (one read for all
    # of them); when it moved, each connection checks its credential again (revoked, user
    # disabled), and each is closed (4401) once its credential expires. A revoked credential's
    # connections close within about this long.
    credential_check_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
