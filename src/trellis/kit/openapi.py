"""The OpenAPI document, made to say what the server answers: one pass over FastAPI's, in one place.

FastAPI documents a 422 with its own ``HTTPValidationError`` on every operation that takes input;
Trellis answers a 400 in its envelope instead (``trellis.kit.handlers``), and errors FastAPI cannot
see at all: the guard's 401/403/429, a missing resource's 404, the edge's 413 and 400 (text or
numbers JSON cannot carry), a model's 502/503. :func:`install_openapi` replaces ``app.openapi``
with a function that builds FastAPI's document once, then:

- drops every 422 and the ``HTTPValidationError``/``ValidationError`` schemas;
- adds ``ErrorEnvelope`` (every error outside ``/v1``) and ``OpenAIError`` (under ``/v1``);
- gives each operation the error statuses it can answer, by rules on what it is: input → 400; a
  security requirement (``trellis.auth.deps.guard``) → 401, 403, 429 and 503 (the Redis rate limiter,
  when it is down and not failing open); a path parameter → 404; a body → 413; a model call → 404
  (unknown model), 502 and 503; every operation → 500 (the edge's answer to an unhandled error);
- keeps what a route declares itself (``responses=`` on the decorator: 409 where the service raises
  Conflict, 415 on uploads, ``/ready``'s 503 ...), giving it the error schema when it has no content.

A 405 for a method a path does not serve is the answer of no operation, so no operation lists it;
it carries an ``Allow`` header with every method of every route on the path (and ``OPTIONS`` answers
204 with the same header), see ``trellis.kit.handlers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from trellis.kit.handlers import is_openai_path

ERROR_ENVELOPE = "ErrorEnvelope"
OPENAI_ERROR = "OpenAIError"
_DROPPED_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")

ERROR_ENVELOPE_SCHEMA: dict[str, Any] = {
    "title": ERROR_ENVELOPE,
    "type": "object",
    "description": "Every error outside /v1: `error.code` is stable (validation_error, not_found_error, ...); "
    "`error.details` adds what the code needs (for a 400, `fields`: each field with its message).",
    "required": ["success", "data", "error", "timestamp", "request_id"],
    "properties": {
        "success": {"type": "boolean", "const": False},
        "data": {"type": "null"},
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "examples": ["validation_error"]},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        },
        "timestamp": {"type": "string"},
        "request_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
}

OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": OPENAI_ERROR,
    "type": "object",
    "description": "Errors under /v1, in OpenAI's shape, so OpenAI SDKs raise their usual exceptions.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "examples": ["invalid_request_error"]},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}

DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request (validation_error): `details.fields` names each parameter or body field at fault; "
    "also a body that is not JSON, or holds a lone surrogate or a number that is not finite",
    401: "Missing, unknown, revoked or expired credentials (authentication_error)",
    403: "The credential lacks the scope or the role this operation needs (authorization_error)",
    404: "Not found, or another user's (not_found_error)",
    409: "Conflict with the current state of the resource (conflict_error)",
    413: "Request body too large (payload_too_large_error)",
    415: "Unsupported media type (unsupported_media_type_error)",
    429: "Rate limit exceeded (rate_limit_error); `Retry-After` says when to try again",
    500: "Internal server error (internal_error); nothing internal is revealed",
    502: "The model's provider answered something unusable (upstream_error)",
    503: "Temporarily unavailable (unavailable_error): no model could serve the call, or the rate limiter is down",
}

# Operations that call a model through the gateway: method and path template.
MODEL_CALLS: frozenset[tuple[str, str]] = frozenset(
    {
        ("post", "/api/v1/ai/generate"),
        ("post", "/api/v1/ai/chat"),
        ("post", "/api/v1/ai/code"),
        ("post", "/api/v1/ai/analyze"),
        ("post", "/v1/chat/completions"),
        ("post", "/v1/completions"),
        ("post", "/v1/embeddings"),
        ("get", "/api/context/search"),  # semantic and hybrid modes embed the query
        ("put", "/api/v1/db/vectors/collections/{name}/items"),  # items given as text are embedded
        ("post", "/api/v1/db/vectors/collections/{name}/items"),
        ("post", "/api/v1/db/vectors/collections/{name}/query"),  # a query given as text is embedded
    }
)

_PATH_PARAMETER = re.compile(r"\{[^}]+\}")


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses the rules give an operation (what its route declares comes on top)."""
    statuses = {500}
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(400)
    if operation.get("security"):
        statuses |= {401, 403, 429, 503}
    if _PATH_PARAMETER.search(path):
        statuses.add(404)
    if "requestBody" in operation:
        statuses.add(413)
    if (method, path) in MODEL_CALLS:
        statuses |= {404, 502, 503}
    return statuses


def _error_response(status: int, schema_name: str, description: str | None) -> dict[str, Any]:
    return {
        "description": description or DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }


def describe_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite FastAPI's document in place (and return it): see the module's docstring."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _DROPPED_SCHEMAS:
        components.pop(name, None)
    components[ERROR_ENVELOPE] = ERROR_ENVELOPE_SCHEMA
    components[OPENAI_ERROR] = OPENAI_ERROR_SCHEMA
    for path, item in schema.get("paths", {}).items():
        error_schema = OPENAI_ERROR if is_openai_path(path) else ERROR_ENVELOPE
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in error_statuses(method, path, operation):
                responses.setdefault(str(status), {})
            for key, response in list(responses.items()):
                if not key.isdigit() or int(key) < 400:
                    continue
                if "content" not in response:
                    responses[key] = _error_response(int(key), error_schema, response.get("description"))
            operation["responses"] = dict(sorted(responses.items()))
    return schema


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` returns the rewritten document, built once."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
