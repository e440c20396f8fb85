"""The request edge, as one pure-ASGI middleware (no BaseHTTPMiddleware overhead on the hot path).

For every HTTP request it: keeps or creates the request id and returns it in ``X-Request-ID``;
refuses bodies over the size limit with 413 (by ``Content-Length`` and while streaming; one limit
for every path, except paths given their own in ``body_limits``, such as the upload route);
records Prometheus metrics by route template; writes one access-log line; turns any unhandled
exception into a 500 envelope that reveals nothing internal; and sets the security headers:
``X-Content-Type-Options: nosniff`` on everything, ``Cache-Control: no-store`` on API answers
(they are one user's data, and some carry secrets: tokens, new keys), and ``X-Frame-Options`` with
a ``Content-Security-Policy`` on HTML pages (``/docs``, ``/redoc``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trellis.kit.envelope import failure
from trellis.kit.http_metrics import HttpMetrics
from trellis.kit.logging import get_logger
from trellis.kit.request_id import accept_request_id, request_id_var

log = get_logger("trellis.access")

NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")
# The API documentation pages load Swagger UI / ReDoc from their CDN, with one inline script.
HTML_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HTML_HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", HTML_POLICY.encode()))
API_PREFIXES = ("/api/", "/v1/")


def security_headers(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response's headers plus the security headers its path and content type call for."""
    names = {name.lower() for name, _ in headers}
    extra = [NOSNIFF] if b"x-content-type-options" not in names else []
    if path.startswith(API_PREFIXES) and b"cache-control" not in names:
        extra.append(NO_STORE)
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    if content_type.startswith(b"text/html"):
        extra.extend(header for header in HTML_HEADERS if header[0] not in names)
    return [*headers, *extra]


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class RequestEdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: HttpMetrics,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        # Exact request paths with a limit of their own (uploads); every other path has max_body_bytes.
        self.body_limits = dict(body_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = None
        content_length: int | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
        request_id = accept_request_id(incoming)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = [500]
        response_started = False
        request_id_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = security_headers(scope.get("path", ""), list(message.get("headers", [])))
                message["headers"] = [*headers, request_id_header]
            await send(message)

        received = 0
        limit = self.body_limits.get(scope.get("path", ""), self.max_body_bytes)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPException from body parsing (anything else becomes a 400).
                    raise HTTPException(413, f"Request body exceeds {limit} bytes")
            return message

        try:
            if content_length is not None and content_length > limit:
                await self._send_json(
                    send_with_id,
                    413,
                    failure(
                        "payload_too_large_error",
                        f"Request body exceeds {limit} bytes",
                        {"max_bytes": limit, "content_length": content_length},
                    ),
                )
            else:
                await self.app(scope, limited_receive, send_with_id)
        except Exception:
            log.exception("unhandled_error", path=scope.get("path"), method=scope.get("method"))
            if not response_started:
                await self._send_json(send_with_id, 500, failure("internal_error", "Internal server error"))
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope.get("method", "")
            self.metrics.observe(method, route, status_holder[0], elapsed)
            log.info(
                "request",
                method=method,
                path=scope.get("path"),
                route=route,
                status=status_holder[0],
                duration_ms=round(elapsed * 1000, 3),
            )
            request_id_var.reset(token)

    @staticmethod
    async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
