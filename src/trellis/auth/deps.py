"""FastAPI dependencies: the runtime, the caller, and the guard every protected route uses.

A guard authenticates (API key or JWT, from ``Authorization: Bearer`` or ``X-API-Key``), takes
one request from the caller's budget for the route's class, and checks the route's scope. The three
steps are public (``authenticate``, ``spend``, ``require_scope``) so the GraphQL door applies the
same rules in its own order: once per request, per class of field, per field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from trellis.auth.schemas import Principal, Scope
from trellis.dashboard.service import CSRF_HEADER, SESSION_COOKIE
from trellis.kit.errors import AuthenticationFailed, PermissionDenied
from trellis.ratelimit.base import Decision, take_or_refuse
from trellis.runtime import Runtime
from trellis.settings import RateRule, RouteClass


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs sync dependencies in a thread pool, a hop on every request.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_bearer = HTTPBearer(auto_error=False, description="An API key or a JWT from /api/v1/auth/token.")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


async def enforce_rate_limit(runtime: Runtime, response: Response, key: str, rule: RateRule, policy: str) -> Decision:
    decision = await take_or_refuse(runtime.limiter, key, rule, policy)
    response.headers.update(decision.headers())
    return decision


MISSING_CREDENTIALS = "Missing credentials: send 'Authorization: Bearer <API key or token>' or 'X-API-Key: <API key>'"


def credential_of(headers: Mapping[str, str]) -> str | None:
    """The credential a request carries, read as the REST guard reads it: ``Authorization: Bearer``
    first, else ``X-API-Key`` (for doors that see raw headers or a WebSocket's init payload)."""
    authorization = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or headers.get("X-API-Key") or None


async def authenticate(runtime: Runtime, credential: str | None) -> Principal:
    """Step 1 of the guard: who is calling (a missing, invalid, expired or revoked credential: 401)."""
    if not credential:
        raise AuthenticationFailed(MISSING_CREDENTIALS)
    return await runtime.auth.authenticate(credential)


async def spend(runtime: Runtime, response: Response, principal: Principal, route_class: RouteClass) -> None:
    """Step 2: one request from the caller's budget for this class of route (429 when it is empty)."""
    settings = runtime.settings
    if settings.rate_limit_enabled:
        rule = settings.rate_limits[principal.role][route_class]
        await enforce_rate_limit(
            runtime, response, f"{route_class.value}:{principal.rate_limit_subject}", rule, route_class.value
        )


def require_scope(principal: Principal, scope: Scope) -> None:
    """Step 3: the credential may do this (403 otherwise)."""
    if scope not in principal.scopes:
        raise PermissionDenied(f"This credential lacks the '{scope.value}' scope", details={"scope": scope.value})


async def authenticate_request(runtime: Runtime, request: Request, credential: str | None) -> Principal:
    """Step 1 for a REST request: its credential, or else the dashboard's session cookie (a change
    made with the cookie must carry the session's CSRF token: trellis.dashboard.service)."""
    if credential is None and runtime.settings.dashboard.enabled:
        session_token = request.cookies.get(SESSION_COOKIE)
        if session_token:
            return await runtime.dashboard.authenticate_request(
                session_token, request.method, request.headers.get(CSRF_HEADER)
            )
    return await authenticate(runtime, credential)


def guard(scope: Scope, route_class: RouteClass = RouteClass.DEFAULT) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        runtime: RuntimeDep,
        response: Response,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        credential = bearer.credentials if bearer is not None else api_key
        principal = await authenticate_request(runtime, request, credential)
        await spend(runtime, response, principal, route_class)
        require_scope(principal, scope)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(guard(Scope.READ))]
Writer = Annotated[Principal, Depends(guard(Scope.WRITE))]
Admin = Annotated[Principal, Depends(guard(Scope.ADMIN))]
