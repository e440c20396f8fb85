"""The dashboard's pages at ``/dashboard``: sign-in, sign-out and one HTML shell per page.

The server side is thin on purpose: a page handler checks the session and renders the page's
frame (navigation, who is signed in, the CSRF token); the page's script then reads the REST API
with the session cookie (``auth.deps.authenticate_request`` accepts it), so a page shows exactly
what the API answers that user, through the same services and the same owner scoping. A request
without a valid session is sent to the sign-in page (303), never shown an error page.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from trellis.auth.deps import RuntimeDep, enforce_rate_limit
from trellis.dashboard.schemas import BrowserSession, SignedIn
from trellis.dashboard.service import SESSION_COOKIE, SIGN_IN_COOKIE, csrf_matches, derive_csrf
from trellis.kit.errors import AuthenticationFailed, RateLimited, TrellisError
from trellis.runtime import Runtime

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/dashboard"
SIGN_IN = f"{PREFIX}/sign-in"
# Stricter than the API documentation's policy (kit.middleware): no inline script or style, nothing
# from another origin; the page's script talks to this origin only (its REST API and /ws).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store", "Referrer-Policy": "same-origin"}
SIGN_IN_COOKIE_SECONDS = 3600

templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix=PREFIX, include_in_schema=False)


def static_files() -> StaticFiles:
    """The pages' scripts and styles, shipped in the package (no network at run time)."""
    return StaticFiles(directory=str(STATIC_DIR))


def _secure(request: Request, runtime: Runtime) -> bool:
    setting = runtime.settings.dashboard.cookie_secure
    return request.url.scheme == "https" if setting == "auto" else bool(setting)


def _safe_next(raw: str | None) -> str:
    """Where to go after signing in: a dashboard path of this site, never another site's URL."""
    if not raw:
        return PREFIX
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith(PREFIX) or raw.startswith("//") or "\\" in raw:
        return PREFIX
    if parts.path.startswith(SIGN_IN):
        return PREFIX
    return raw


async def _current(request: Request, runtime: Runtime) -> BrowserSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return await runtime.dashboard.resolve(token)
    except AuthenticationFailed:
        return None


def _to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"{SIGN_IN}?next={quote(target, safe='')}", status_code=303)
    response.headers.update(PAGE_HEADERS)
    return response


def _render(request: Request, template: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status_code, headers=PAGE_HEADERS)


async def _page(request: Request, runtime: Runtime, page: str, **extra: Any) -> Response:
    session = await _current(request, runtime)
    if session is None:
        return _to_sign_in(request)
    principal = session.principal
    context = {
        "page": page,
        "user": principal,
        "is_admin": principal.is_admin,
        "csrf_token": session.csrf_token,
        "refresh_seconds": runtime.settings.dashboard.refresh_seconds,
        "sample_seconds": runtime.settings.metrics.interval_seconds,
        **extra,
    }
    return _render(request, f"{page}.html", context)


# --- sign-in and sign-out ------------------------------------------------------------------------


def _sign_in_form(
    request: Request,
    runtime: Runtime,
    *,
    error: str | None = None,
    status_code: int = 200,
    method: str = "key",
    next_path: str | None = None,
) -> HTMLResponse:
    pre = request.cookies.get(SIGN_IN_COOKIE) or ""
    fresh = not pre.startswith("dsi_")
    if fresh:
        pre = "dsi_" + secrets.token_urlsafe(24)
    context = {
        "page": "sign_in",
        "csrf_token": derive_csrf(pre),
        "next": _safe_next(next_path if next_path is not None else request.query_params.get("next")),
        "error": error,
        "method": method,
    }
    response = _render(request, "sign_in.html", context, status_code=status_code)
    if fresh:
        response.set_cookie(
            SIGN_IN_COOKIE,
            pre,
            max_age=SIGN_IN_COOKIE_SECONDS,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=_secure(request, runtime),
        )
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request, runtime: RuntimeDep) -> Response:
    if await _current(request, runtime) is not None:
        response = RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        response.headers.update(PAGE_HEADERS)
        return response
    return _sign_in_form(request, runtime)


@router.post("/sign-in")
async def sign_in(request: Request, response: Response, runtime: RuntimeDep) -> Response:
    form = await request.form()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    method = "password" if fields.get("method") == "password" else "key"
    next_path = fields.get("next")
    pre = request.cookies.get(SIGN_IN_COOKIE)
    if not pre or not csrf_matches(pre, fields.get("csrf_token")):
        return _sign_in_form(
            request,
            runtime,
            error="The sign-in form had expired or did not come from this page (CSRF check failed): try again.",
            status_code=403,
            method=method,
            next_path=next_path,
        )
    settings = runtime.settings
    client = request.client.host if request.client else "unknown"
    try:
        if settings.rate_limit_enabled:  # the same budgets as POST /api/v1/auth/token
            await enforce_rate_limit(runtime, response, f"login:ip:{client}", settings.login_rate_limit, "login")
        if method == "password":
            username = fields.get("username", "").strip()
            password = fields.get("password", "")
            if not username or not password:
                raise AuthenticationFailed("Enter your username and password")
            if settings.rate_limit_enabled:
                await enforce_rate_limit(
                    runtime, response, f"login:user:{username.casefold()}", settings.login_rate_limit, "login"
                )
            signed_in = await runtime.dashboard.sign_in_with_password(username[:64], password[:1024])
        else:
            key = fields.get("api_key", "").strip()
            if not key:
                raise AuthenticationFailed("Enter an API key")
            signed_in = await runtime.dashboard.sign_in_with_key(key[:4096])
    except (AuthenticationFailed, RateLimited) as exc:
        status = 429 if isinstance(exc, RateLimited) else 401
        return _sign_in_form(
            request, runtime, error=exc.message, status_code=status, method=method, next_path=next_path
        )
    except TrellisError as exc:
        return _sign_in_form(
            request, runtime, error=exc.message, status_code=exc.status_code, method=method, next_path=next_path
        )
    return _signed_in(request, runtime, signed_in, _safe_next(next_path))


def _signed_in(request: Request, runtime: Runtime, signed_in: SignedIn, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.headers.update(PAGE_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        max_age=runtime.settings.dashboard.session_ttl_seconds,
        path="/",  # the pages' scripts call /api and /ws with it
        httponly=True,
        samesite="lax",
        secure=_secure(request, runtime),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, runtime: RuntimeDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    form = await request.form()
    submitted = form.get("csrf_token")
    if token and not csrf_matches(token, submitted if isinstance(submitted, str) else None):
        return _render(
            request,
            "error.html",
            {"page": "error", "title": "Forbidden", "message": "Sign-out refused: the CSRF token is missing or wrong."},
            status_code=403,
        )
    if token:
        await runtime.dashboard.sign_out(token)
    response = RedirectResponse(SIGN_IN, status_code=303)
    response.headers.update(PAGE_HEADERS)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request, runtime))
    return response


# --- pages ---------------------------------------------------------------------------------------


@router.get("")
async def overview(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "overview")


@router.get("/models")
async def models(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "models")


@router.get("/logs")
async def logs(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "logs")


@router.get("/logs/{log_id}")
async def log_entry(log_id: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "log", object_id=log_id)


@router.get("/contexts")
async def contexts(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "contexts")


@router.get("/contexts/{context_id}")
async def context(context_id: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "context", object_id=context_id)


@router.get("/workflows")
async def workflows(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "workflows")


@router.get("/workflows/runs/{run_id}")
async def run(run_id: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "run", object_id=run_id)


@router.get("/alerts")
async def alerts(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, "alerts")
