"""The request edge, as one pure-ASGI middleware (no BaseHTTPMiddleware overhead on the hot path).

For every HTTP request it: keeps or creates the request id and returns it in ``X-Request-ID``;
refuses bodies over the size limit with 413 (by ``Content-Length`` and while streaming; one limit
for every path, except paths given their own in ``body_limits``, such as the upload route);
records Prometheus metrics by route template; writes one access-log line; turns any unhandled
exception into a 500 envelope that reveals nothing internal; and sets the security headers:
``X-Content-Type-Options: nosniff`` on everything, ``Cache-Control: no-store`` on API answers
(they are one user's data, and some carry secrets: tokens, new keys), and ``X-Frame-Options`` with
a ``Content-Security-Policy`` on HTML pages (``/docs``, ``/redoc``). A JSON body is read whole
(it is bounded by the limit) and refused with 400 when a string in it holds a lone surrogate
or a number is not finite (``trellis.kit.unicode``), so no handler can store or echo one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trellis.kit.envelope import failure
from trellis.kit.errors import FieldError
from trellis.kit.handlers import error_response, is_openai_path, openai_error_response
from trellis.kit.http_metrics import HttpMetrics
from trellis.kit.logging import get_logger
from trellis.kit.request_id import accept_request_id, request_id_var
from trellis.kit.unicode import (
    lone_surrogate_path,
    may_hold_huge_numbers,
    may_hold_lone_surrogates,
    non_finite_path,
)

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
        json_body = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
            elif name == b"content-type":
                json_body = _is_json_media(value)
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
            app_receive: Receive = limited_receive
            if content_length is not None and content_length > limit:
                pass  # answered below, without reading the body
            elif json_body and scope.get("method") in _BODY_METHODS:
                body = await _read_body(receive, limit)
                if body is None:
                    content_length = limit + 1  # streamed past the limit: the 413 below
                else:
                    problem = _unstorable_value(body)
                    if problem is not None:
                        await _refuse(scope, send_with_id, *problem)
                        return
                    app_receive = _replay(body, receive)
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
                await self.app(scope, app_receive, send_with_id)
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


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json_media(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # what follows the body: a disconnect

    return replay


# What the edge refuses in a JSON body: a cheap byte scan that must hit first, the walk that finds the
# value, the message (``{where}`` is the field) and the error type.
_UNSTORABLE = (
    (
        may_hold_lone_surrogates,
        lone_surrogate_path,
        "Invalid text in {where}: a lone UTF-16 surrogate (\\ud800-\\udfff) cannot be encoded",
        "string_unicode",
    ),
    (
        may_hold_huge_numbers,
        non_finite_path,
        "Invalid number in {where}: it must be finite (NaN, Infinity and overflowing values are not)",
        "finite_number",
    ),
)


def _unstorable_value(body: bytes) -> tuple[str, str, str] | None:
    """(field, message, type) for the first value in the JSON body that cannot be stored or sent: a
    string holding a lone surrogate, or a number that is not finite. None when there is none (or the
    body is not JSON: the handler says so)."""
    suspected = [check for check in _UNSTORABLE if check[0](body)]
    if not suspected:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    for _, find, message, kind in suspected:
        path = find(document)
        if path is not None:
            field = ".".join(path)
            return field, message.format(where=f"'{field}'" if field else "the body"), kind
    return None


async def _refuse(scope: Scope, send: Send, field: str, message: str, kind: str) -> None:
    entry: FieldError = {"field": field, "message": message, "location": "body", "type": kind}
    details = {"fields": [entry]}
    response = (
        openai_error_response(400, "validation_error", message, details)
        if is_openai_path(scope.get("path", ""))
        else error_response(400, "validation_error", message, details)
    )

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)
