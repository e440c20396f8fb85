"""REST door for authentication, users and API keys. Endpoints parse, call the service, shape."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from trellis.auth.deps import Admin, Reader, RuntimeDep, Writer, enforce_rate_limit
from trellis.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    Me,
    TokenRequest,
    TokenResponse,
    UserCreate,
    UserOut,
)
from trellis.kit.envelope import Envelope, ok

router = APIRouter(prefix="/api/v1")


@router.post(
    "/auth/token",
    tags=["auth"],
    summary="Exchange username and password for a JWT",
    responses={
        401: {"description": "Unknown username, wrong password or disabled user (authentication_error)"},
        429: {"description": "Too many attempts from this address or for this username (rate_limit_error)"},
        503: {"description": "The rate limiter is unavailable (unavailable_error)"},
    },
)
async def create_token(
    body: TokenRequest, request: Request, response: Response, runtime: RuntimeDep
) -> Envelope[TokenResponse]:
    settings = runtime.settings
    if settings.rate_limit_enabled:
        # The address is the TCP peer's unless it is a trusted proxy (see create_app).
        client = request.client.host if request.client else "unknown"
        await enforce_rate_limit(runtime, response, f"login:ip:{client}", settings.login_rate_limit, "login")
        username = body.username.casefold()
        await enforce_rate_limit(runtime, response, f"login:user:{username}", settings.login_rate_limit, "login")
    return ok(await runtime.auth.login(body.username, body.password))


@router.get("/auth/me", tags=["auth"], summary="Who am I")
async def me(principal: Reader) -> Envelope[Me]:
    return ok(
        Me(
            id=principal.user_id,
            username=principal.username,
            role=principal.role,
            auth=principal.via,
            key_id=principal.key_id,
            scopes=sorted(principal.scopes),
        )
    )


@router.post(
    "/users",
    tags=["users"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a user (admin)",
    responses={409: {"description": "The username is taken (conflict_error)"}},
)
async def create_user(body: UserCreate, principal: Admin, runtime: RuntimeDep) -> Envelope[UserOut]:
    return ok(UserOut.model_validate(await runtime.auth.create_user(principal, body)))


@router.get("/users", tags=["users"], summary="List users (admin)")
async def list_users(principal: Admin, runtime: RuntimeDep) -> Envelope[list[UserOut]]:
    return ok([UserOut.model_validate(u) for u in await runtime.auth.list_users(principal)])


@router.post(
    "/users/{user_id}/disable",
    tags=["users"],
    summary="Disable a user (admin); their keys stop working",
    responses={409: {"description": "You cannot disable your own account (conflict_error)"}},
)
async def disable_user(user_id: str, principal: Admin, runtime: RuntimeDep) -> Envelope[UserOut]:
    return ok(UserOut.model_validate(await runtime.auth.set_user_disabled(principal, user_id, True)))


@router.post("/users/{user_id}/enable", tags=["users"], summary="Enable a disabled user (admin)")
async def enable_user(user_id: str, principal: Admin, runtime: RuntimeDep) -> Envelope[UserOut]:
    return ok(UserOut.model_validate(await runtime.auth.set_user_disabled(principal, user_id, False)))


@router.post(
    "/keys",
    tags=["keys"],
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key (shown once)",
    responses={404: {"description": "No user with this user_id (not_found_error)"}},
)
async def create_key(body: ApiKeyCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[ApiKeyCreated]:
    key, plaintext = await runtime.auth.create_key(principal, body)
    return ok(ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=plaintext))


@router.get(
    "/keys",
    tags=["keys"],
    summary="List API keys: your own, or (admins) anyone's",
    responses={404: {"description": "No user with this user_id (not_found_error)"}},
)
async def list_keys(principal: Reader, runtime: RuntimeDep, user_id: str | None = None) -> Envelope[list[ApiKeyOut]]:
    return ok([ApiKeyOut.model_validate(k) for k in await runtime.auth.list_keys(principal, user_id)])


@router.delete("/keys/{key_id}", tags=["keys"], summary="Revoke an API key; it stops working immediately")
async def revoke_key(key_id: str, principal: Writer, runtime: RuntimeDep) -> Envelope[ApiKeyOut]:
    return ok(ApiKeyOut.model_validate(await runtime.auth.revoke_key(principal, key_id)))
