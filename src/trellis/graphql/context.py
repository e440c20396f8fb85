"""The context of one GraphQL request (HTTP) or connection (graphql-transport-ws): who is calling,
under which rules, and the request's DataLoaders.

Every root field starts with ``await context.admit(scope, route_class)``, the REST guard's three
steps (``trellis.auth.deps``) in GraphQL's order:

1. **authenticate** the credential once per HTTP request (``Authorization: Bearer`` or
   ``X-API-Key``; over a WebSocket, the same names in the ``connection_init`` payload or the
   handshake's headers), again for each subscription started on a socket, so a key revoked
   since the socket opened cannot start anything new;
2. **spend** one request from the user's budget: for the ``default`` class once per HTTP request
   (one document is one request, as one REST call is), for the ``ai`` class once per model call
   (two aliased ``aiResponse`` fields are two calls, as two REST calls are), once per subscription;
3. **check the scope** the field needs, as the REST route does.

A refusal raises the same ``kit.errors`` as REST (401, 429, 403) and its headers
(``WWW-Authenticate``, ``Retry-After``, ``RateLimit``) go on the HTTP response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from strawberry.fastapi import BaseContext

from trellis.auth.deps import authenticate, credential_of, require_scope, spend
from trellis.auth.schemas import Principal, Scope
from trellis.graphql.loaders import Loaders
from trellis.kit.errors import InternalError, TrellisError
from trellis.runtime import Runtime
from trellis.settings import RouteClass


class GraphQLContext(BaseContext):
    def __init__(self, runtime: Runtime, *, credential: str | None, websocket: bool) -> None:
        super().__init__()
        self.runtime = runtime
        self.credential = credential
        self.websocket = websocket
        self._principal: Principal | None = None
        self._spent: set[RouteClass] = set()
        self._lock = asyncio.Lock()
        self._loaders: Loaders | None = None

    @property
    def principal(self) -> Principal:
        """The caller, once a root field admitted them (nested fields read it)."""
        if self._principal is None:
            raise InternalError("A field read the caller before any root field admitted them")
        return self._principal

    @property
    def loaders(self) -> Loaders:
        """This request's DataLoaders. Over a socket they do not cache (a subscription's events are
        read as they are now), but they still batch each event's nested reads."""
        if self._loaders is None:
            self._loaders = Loaders(self.runtime, self.principal, cache=not self.websocket)
        return self._loaders

    def _sink(self) -> Response:
        # Where rate-limit and auth headers go: the HTTP response (a socket has none after the handshake).
        response = self.response
        return response if isinstance(response, Response) and not self.websocket else Response()

    async def admit(self, scope: Scope, route_class: RouteClass = RouteClass.DEFAULT) -> Principal:
        sink = self._sink()
        try:
            async with self._lock:
                if self._principal is None or self.websocket:
                    self._principal = await authenticate(self.runtime, self.credential)
                    self._loaders = None
                principal = self._principal
                if route_class is RouteClass.AI or self.websocket or route_class not in self._spent:
                    await spend(self.runtime, sink, principal, route_class)
                    self._spent.add(route_class)
            require_scope(principal, scope)
        except TrellisError as exc:
            sink.headers.update(exc.headers)
            raise
        return principal


def websocket_credential(connection_params: Any, headers: Mapping[str, str]) -> str | None:
    """A socket's credential: ``Authorization`` / ``X-API-Key`` (or ``apiKey``) in the
    ``connection_init`` payload, else in the handshake's headers (non-browser clients)."""
    if isinstance(connection_params, Mapping):
        named = {str(k): v for k, v in connection_params.items() if isinstance(v, str)}
        if "apiKey" in named and "X-API-Key" not in named:
            named["X-API-Key"] = named["apiKey"]
        found = credential_of(named) or credential_of({k.lower(): v for k, v in named.items()})
        if found:
            return found
    return credential_of(headers)


async def get_context(connection: HTTPConnection) -> GraphQLContext:
    """Strawberry's ``context_getter``: the request's context (the router sets its request and
    response). Nothing is checked here: each root field admits the caller itself, so a document
    that fails is answered with errors in GraphQL's shape, never with an HTML page or a bare 401."""
    runtime: Runtime = connection.app.state.runtime
    websocket = connection.scope["type"] == "websocket"
    credential = None if websocket else credential_of(connection.headers)
    return GraphQLContext(runtime, credential=credential, websocket=websocket)
