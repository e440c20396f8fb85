"""An app behind a real uvicorn socket, in the test's own event loop.

httpx's ASGITransport runs an app to the end before it returns a response, so it can neither
stream a live response nor deliver a disconnect, and it speaks no WebSocket: tests of live streams,
cancellation and ``/ws`` use this instead (the harness's lifespan stays the test's).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from trellis.app import UVICORN_WS_PROTOCOL


@asynccontextmanager
async def real_server(app: Any, **config: Any) -> AsyncIterator[str]:
    """``async with real_server(h.app) as url`` (``http://127.0.0.1:<port>``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {
        "lifespan": "off",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "ws": UVICORN_WS_PROTOCOL,  # what `trellis serve` runs
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # uvicorn offers no event for this
                assert not task.done(), "uvicorn did not start"
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
