"""FastAPI dependencies: the runtime, the caller, and the guard every protected route uses.

A guard authenticates (API key or JWT, from ``Authorization: Bearer`` or ``X-API-Key``), takes
one request from the caller's budget for the route's class, and checks the route's scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from trellis.auth.schemas import Principal, Scope
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


def guard(scope: Scope, route_class: RouteClass = RouteClass.DEFAULT) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        runtime: RuntimeDep,
        response: Response,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        credential = bearer.credentials if bearer is not None else api_key
        if not credential:
            raise AuthenticationFailed(
                "Missing credentials: send 'Authorization: Bearer <API key or token>' or 'X-API-Key: <API key>'"
            )
        principal = await runtime.auth.authenticate(credential)
        settings = runtime.settings
        if settings.rate_limit_enabled:
            rule = settings.rate_limits[principal.role][route_class]
            await enforce_rate_limit(
                runtime, response, f"{route_class.value}:{principal.rate_limit_subject}", rule, route_class.value
            )
        if scope not in principal.scopes:
            raise PermissionDenied(f"This credential lacks the '{scope.value}' scope", details={"scope": scope.value})
        return principal

    return dependency


Reader = Annotated[Principal, Depends(guard(Scope.READ))]
Writer = Annotated[Principal, Depends(guard(Scope.WRITE))]
Admin = Annotated[Principal, Depends(guard(Scope.ADMIN))]
