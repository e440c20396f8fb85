"""The WebSocket door: ``/ws`` itself, and ``POST /api/v1/ws/ticket`` (a single-use ticket for
clients that cannot send a credential in a message header, such as browsers).

The handshake is refused (HTTP 403) when the ``Origin`` header names a site that is not allowed:
the page's own host, ``[ws] allowed_origins`` and ``cors_origins`` are; a client sending no
``Origin`` (not a browser) is. A credential other than a ticket in the URL is refused too: URLs end
up in logs. What happens on an accepted socket is ``trellis.ws.connection``'s.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket

from trellis.auth.deps import Reader, RuntimeDep
from trellis.auth.schemas import WsTicketOut
from trellis.kit.envelope import Envelope, ok
from trellis.kit.logging import get_logger
from trellis.runtime import Runtime
from trellis.settings import Settings
from trellis.ws.connection import serve
from trellis.ws.schemas import CLOSE_UNAUTHENTICATED

log = get_logger(__name__)

router = APIRouter(tags=["websocket"])
URL_CREDENTIALS = ("token", "api_key", "key", "access_token", "credential")


def origin_allowed(origin: str, host: str | None, settings: Settings) -> bool:
    allowed = [*settings.ws.allowed_origins, *settings.cors_origins]
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and host is not None and parts.netloc == host


@router.post(
    "/api/v1/ws/ticket",
    summary="A single-use ticket for opening /ws (?ticket=...)",
    description="For clients that cannot authenticate in the first message's body at the right time, or that "
    "must not put a credential in a URL: the ticket works once, within `[ws] ticket_ttl_seconds`, and stands "
    "for the credential that asked for it (with its scopes; the connection closes when that credential expires "
    "or is revoked).",
)
async def ticket(principal: Reader, runtime: RuntimeDep) -> Envelope[WsTicketOut]:
    return ok(await runtime.auth.issue_ticket(principal))


@router.websocket("/ws")
async def websocket(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    origin = websocket.headers.get("origin")
    if origin is not None and not origin_allowed(origin, websocket.headers.get("host"), runtime.settings):
        log.warning("ws_origin_refused", origin=origin[:200])
        await websocket.close(code=1008)  # before accepting: the handshake is answered 403
        return
    params = websocket.query_params
    if any(name in params for name in URL_CREDENTIALS):
        await websocket.accept()
        await websocket.close(
            CLOSE_UNAUTHENTICATED, "credentials are never taken from the URL: use ?ticket= (POST /api/v1/ws/ticket)"
        )
        return
    gauge = runtime.live_metrics.ws_connections
    gauge.inc()
    try:
        await serve(websocket, runtime, params.get("ticket"))
    finally:
        gauge.dec()
