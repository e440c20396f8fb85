"""The one place where errors become HTTP responses in the seed's envelope.

Every error answers in the envelope, on every path (``/api``, ``/health``, a mistyped one), except
under ``/v1``, the OpenAI-compatible door, which answers in OpenAI's error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from trellis.kit.envelope import failure
from trellis.kit.errors import FieldError, Location, TrellisError, ValidationFailed

_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("validation_error", "Invalid request parameters"),
    401: ("authentication_error", "Authentication required"),
    403: ("authorization_error", "Insufficient permissions"),
    404: ("not_found_error", "Resource not found"),
    405: ("method_not_allowed_error", "Method not allowed"),
    409: ("conflict_error", "Conflict with the current state of the resource"),
    413: ("payload_too_large_error", "Request body too large"),
    415: ("unsupported_media_type_error", "Unsupported media type"),
    429: ("rate_limit_error", "Rate limit exceeded"),
    503: ("unavailable_error", "Service temporarily unavailable"),
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(failure(code, message, details), status_code=status, headers=headers)


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "server_error",
    503: "server_error",
}


def is_openai_path(path: str) -> bool:
    """Paths of the OpenAI-compatible door, whose errors take OpenAI's shape."""
    return path == "/v1" or path.startswith("/v1/")


def openai_error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """OpenAI's error shape, so OpenAI SDKs raise their usual exceptions. ``param`` is the first
    field a 400 names (None when it names the request as a whole, as for invalid JSON)."""
    fields = (details or {}).get("fields") or []
    param = (fields[0].get("field") or None) if fields else None
    body = {
        "error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"), "param": param, "code": code}
    }
    return JSONResponse(body, status_code=status, headers=headers)


def respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if is_openai_path(request.url.path):
        return openai_error_response(status, code, message, details, headers)
    return error_response(status, code, message, details, headers)


_LOCATIONS: frozenset[str] = frozenset(get_args(Location))


def _entry(error: Mapping[str, Any]) -> FieldError:
    """One of FastAPI's (pydantic's) errors as a ``details.fields`` entry."""
    loc = [str(part) for part in error.get("loc", ())]
    location = cast(Location, loc[0]) if loc and loc[0] in _LOCATIONS else "body"
    if error.get("type") == "json_invalid":
        # ("body", offset): the location is a character offset into the body, not a field.
        entry = FieldError(field="", message=error.get("msg") or "invalid JSON", location="body", type="json_invalid")
        raw = error.get("loc", ())
        position = raw[1] if len(raw) > 1 else error.get("ctx", {}).get("position")
        if isinstance(position, int):
            entry["position"] = position
        return entry
    return FieldError(
        field=".".join(loc[1:]) if len(loc) > 1 else ".".join(loc),
        message=error.get("msg") or "invalid",
        location=location,
        type=error.get("type") or "value_error",
    )


def validation_failed(exc: RequestValidationError) -> ValidationFailed:
    """FastAPI's request validation error as the product's own 400, built like every other."""
    fields = [_entry(error) for error in exc.errors()]
    if not fields:  # FastAPI always names at least one; never answer a 400 naming nothing
        fields = [FieldError(field="", message="invalid request", location="body", type="value_error")]
    if any(f["type"] == "json_invalid" for f in fields):
        return ValidationFailed.of_fields(fields, summary="Request body is not valid JSON")
    named = ", ".join(sorted({f["field"] for f in fields if f["field"]}))
    message = f"Invalid request parameters: {named}" if named else "Invalid request parameters"
    return ValidationFailed.of_fields(fields, summary=message)


async def _handle_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TrellisError)
    return respond(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _handle_domain_error(request, validation_failed(exc))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods the request's path serves, plus OPTIONS (which every path answers).

    Starlette's own 405 names only the methods of the route the path was matched to, although other
    routes may share its template (``GET`` and ``DELETE /collections/{name}`` are two routes). The
    OpenAPI document has them all, by template; routes left out of it (``/docs``) name their own.
    """
    route = request.scope.get("route")
    if route is None:  # Starlette's own routes (/docs, /openapi.json) do not say which one matched
        route = next((r for r in request.app.router.routes if r.matches(request.scope)[0] != Match.NONE), None)
    template = getattr(route, "path", None)
    methods = {method.upper() for method in getattr(route, "methods", None) or ()}
    if isinstance(template, str):
        documented = request.app.openapi().get("paths", {}).get(template, {})
        methods |= {method.upper() for method in documented if method.upper() in _METHODS}
    return [*(m for m in _METHODS if m in methods), "OPTIONS"]


async def _handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, message = _HTTP_CODES.get(exc.status_code, ("error", str(exc.detail)))
    if exc.status_code == 404:
        message = f"No route for {request.method} {request.url.path}"
    elif isinstance(exc.detail, str) and exc.status_code not in (404, 405):
        message = exc.detail
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        allow = ", ".join(allowed_methods(request))
        if request.method == "OPTIONS":
            # No route serves OPTIONS (CORS preflights, when configured, never reach here): it says
            # which methods the path has, as RFC 9110 has it.
            return Response(status_code=204, headers={"Allow": allow})
        headers = {**(headers or {}), "Allow": allow}
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}"
    if is_openai_path(request.url.path):
        return openai_error_response(exc.status_code, code, message, {}, headers)
    # Every other path answers in the envelope: /api, and /health, /docs or a mistyped path alike.
    return error_response(exc.status_code, code, message, {}, headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TrellisError, _handle_domain_error)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
