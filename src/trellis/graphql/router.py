"""``/graphql``: Strawberry's FastAPI router over the schema, with the door's own edges.

- HTTP: ``POST`` (and ``GET`` for queries) at ``/graphql``; GraphiQL on ``GET`` from a browser
  when ``[graphql] graphiql`` is on. A request Strawberry refuses before GraphQL starts (a body
  that is not JSON, no query) answers in GraphQL's error shape with the envelope's code, not as
  plain text. Answers are ``Cache-Control: no-store`` (one user's data), like ``/api``.
- WebSocket: the ``graphql-transport-ws`` protocol on the same path. The ``connection_init``
  payload (or the handshake's headers) carries the credential: ``{"Authorization": "Bearer
  <key or JWT>"}`` or ``{"X-API-Key": "<key>"}``. A missing or refused credential closes the
  socket with 4403 before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pydantic_core
import strawberry
from cross_web import HTTPException
from fastapi.routing import APIRoute
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocket
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import DisableIntrospection, SchemaExtension
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.execution import ExecutionContext
from strawberry.types.unset import UNSET

from trellis.auth.deps import authenticate
from trellis.graphql.context import GraphQLContext, get_context, websocket_credential
from trellis.graphql.errors import DomainErrors, log_errors
from trellis.graphql.limits import limits_extension
from trellis.graphql.schema import Mutation, Query, Subscription
from trellis.kit.errors import TrellisError
from trellis.kit.request_id import current_request_id
from trellis.settings import Settings
from trellis.settings.graphql import GraphQLSettings

PATH = "/graphql"

# GraphiQL loads React and GraphiQL from unpkg; it talks to this origin (HTTP and WebSocket) only.
GRAPHIQL_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://unpkg.com; "
    "style-src 'self' 'unsafe-inline' https://unpkg.com; font-src https://unpkg.com data:; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_ERRORS = "GraphQL's shape: {data, errors: [{message, path, extensions: {code, status, fields?, details?}}]}"
GRAPHQL_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data", "errors"],
    "properties": {"data": {"type": "null"}, "errors": {"type": "array", "items": {"type": "object"}}},
}
ANSWER: dict[str, Any] = {
    "description": f"A GraphQL answer (errors, if any, in {_ERRORS}); GraphiQL (HTML) for a browser's GET",
    "content": {"application/json": {}, "text/html": {}},
}
REFUSED: dict[str, Any] = {"content": {"application/json": {"schema": GRAPHQL_ERROR_SCHEMA}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: ANSWER,
    400: {"description": f"Not a GraphQL request (no query, a body that is not JSON), in {_ERRORS}", **REFUSED},
}


_HTTP_CODES = {
    400: "validation_error",
    401: "authentication_error",
    403: "authorization_error",
    404: "not_found_error",
    405: "method_not_allowed_error",
    413: "payload_too_large_error",
    415: "unsupported_media_type_error",
}


class TrellisSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        log_errors(errors, execution_context)


def build_schema(settings: GraphQLSettings) -> strawberry.Schema:
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        limits_extension(settings),
        DomainErrors,
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    return TrellisSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(),
    )


class TrellisGraphQLRouter(GraphQLRouter[GraphQLContext, None]):
    async def on_ws_connect(self, context: GraphQLContext) -> Any:
        request = context.request
        headers = request.headers if request is not None else {}
        context.credential = websocket_credential(context.connection_params, headers)
        try:
            await authenticate(context.runtime, context.credential)
        except TrellisError as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from None
        return UNSET

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        response = await super().render_graphql_ide(request)
        response.headers["Content-Security-Policy"] = GRAPHIQL_POLICY
        return response

    def encode_json(self, data: object) -> bytes:
        # pydantic's serializer (Rust), as the REST door's answers: the stdlib's json is slower.
        return pydantic_core.to_json(data)

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def run(  # type: ignore[override]
        self,
        request: Request | WebSocket,
        context: GraphQLContext = UNSET,
        root_value: None = UNSET,
    ) -> Response | WebSocket:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            if isinstance(request, WebSocket):
                raise
            return refused(exc.status_code, exc.reason)


def refused(status: int, reason: str) -> JSONResponse:
    """A request refused before GraphQL starts, in GraphQL's shape with the envelope's code."""
    code = _HTTP_CODES.get(status, "validation_error")
    extensions: dict[str, Any] = {"code": code, "status": status}
    if code == "validation_error":
        extensions["fields"] = [{"field": "", "message": reason, "location": "body", "type": "graphql_request"}]
    request_id = current_request_id()
    if request_id:
        extensions["request_id"] = request_id
    body = {"data": None, "errors": [{"message": reason, "extensions": extensions}]}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def graphql_router(settings: Settings) -> TrellisGraphQLRouter:
    tuning = settings.graphql
    router = TrellisGraphQLRouter(
        build_schema(tuning),
        path=PATH,
        graphql_ide="graphiql" if tuning.graphiql else None,
        context_getter=get_context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=timedelta(seconds=tuning.connection_init_wait_seconds),
        allowed_origins=settings.cors_origins,
        tags=["graphql"],
        responses=RESPONSES,
    )
    for route in router.routes:
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
            # Strawberry documents its GET as JSON only; it is GraphiQL's page too, or a 404 without it.
            route.responses[200] = ANSWER
            route.responses[404] = {"description": f"GET without a query when GraphiQL is off, in {_ERRORS}", **REFUSED}
    return router
