"""Dashboard sessions: what the sign-in page, the pages and the REST guard call.

A browser signs in with an API key or a username and password, through the same ``AuthService``
checks as any other door; it gets a random session token in an HttpOnly cookie (its SHA-256 is the
row's key: a leaked table opens no session). The session stands for the credential that signed in
and is revalidated on every use (``AuthService.revalidate``, an epoch-cached read), so revoking the
key or disabling the user ends it at once, as it would end a WebSocket.

The session row itself is cached the same way (``trellis.auth.cache.EpochCache``, tagged with the
auth epoch read before the row): the overview page fires about nine requests per refresh, and while
nothing was revoked each resolves from memory, with no database I/O. Signing out deletes the row and
then moves the auth epoch, so every replica's cached copy stops being trusted; expiry is checked
against the clock on every use, cached or not.

CSRF: the token a page sends back (form field or ``X-CSRF-Token`` header) is an HMAC of the
session token, so it needs no storage and cannot be computed without the cookie, which scripts on
other sites can neither read nor (``SameSite=Strict``) have sent. The sign-in form, which has no
session yet, is protected the same way by a short-lived pre-session cookie (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from trellis.auth.cache import EpochCache, SingleFlight
from trellis.auth.schemas import ROLE_SCOPES, Principal, Scope
from trellis.auth.service import AuthService, hash_api_key
from trellis.dashboard import repository as repo
from trellis.dashboard.models import DashboardSession
from trellis.dashboard.schemas import BrowserSession, SignedIn
from trellis.kit.clock import Clock
from trellis.kit.errors import AuthenticationFailed, PermissionDenied
from trellis.settings import DashboardSettings, Role
from trellis.storage.database import Database

SESSION_PREFIX = "dss_"
# The cookie holding the session token, and the one holding the sign-in form's pre-session token.
SESSION_COOKIE = "trellis_session"
SIGN_IN_COOKIE = "trellis_sign_in"
CSRF_HEADER = "X-CSRF-Token"
# Methods that change nothing need no CSRF token (and the API's GET routes change nothing).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKEN_CHARS = 100


def derive_csrf(token: str) -> str:
    """The CSRF token of a session (or of a sign-in form's pre-session cookie)."""
    digest = hmac.new(token.encode(), b"trellis dashboard csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(token: str, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(derive_csrf(token), submitted or "")


@dataclass(frozen=True, slots=True)
class _StoredSession:
    """What a session row says, detached from the ORM session that read it (safe to cache)."""

    user_id: str
    key_id: str | None
    via: Literal["api_key", "jwt"]
    scopes: frozenset[Scope]
    expires_at: datetime


class DashboardSessions:
    def __init__(self, database: Database, auth: AuthService, settings: DashboardSettings, clock: Clock) -> None:
        self._db = database
        self._auth = auth
        self._settings = settings
        self._clock = clock
        self._cache: EpochCache[_StoredSession] = EpochCache(clock)
        self._loads: SingleFlight[_StoredSession | None] = SingleFlight()

    async def sign_in_with_key(self, key: str) -> SignedIn:
        """A session standing for this API key (401 for a key that does not work)."""
        return await self._open(await self._auth.authenticate_api_key(key.strip()))

    async def sign_in_with_password(self, username: str, password: str) -> SignedIn:
        """A session standing for this user (401 for a wrong password, an unknown or disabled user);
        the password is checked by ``AuthService.login``, as ``POST /api/v1/auth/token`` does."""
        token = await self._auth.login(username, password)
        return await self._open(await self._auth.authenticate_jwt(token.access_token))

    async def _open(self, principal: Principal) -> SignedIn:
        now = self._clock.now()
        expires_at = now + timedelta(seconds=self._settings.session_ttl_seconds)
        if principal.via == "api_key" and principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        row = DashboardSession(
            token_hash=hash_api_key(token),
            user_id=principal.user_id,
            key_id=principal.key_id if principal.via == "api_key" else None,
            via=principal.via,
            scopes=sorted(s.value for s in principal.scopes),
            expires_at=expires_at,
            created_at=now,
        )
        async with self._db.transaction() as session:
            await repo.purge_sessions(session, now)
            session.add(row)
        return SignedIn(token, BrowserSession(principal, derive_csrf(token), expires_at))

    async def resolve(self, token: str) -> BrowserSession:
        """The session this cookie value stands for, as its credential stands now: an unknown,
        ended or expired session, a revoked or expired key or a disabled user is a 401."""
        if not token.startswith(SESSION_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed("Invalid session: sign in again")
        stored = await self._stored(hash_api_key(token))
        if stored is None:
            raise AuthenticationFailed("No such session (signed out, or never signed in): sign in again")
        if stored.expires_at <= self._clock.now():
            raise AuthenticationFailed("Session has expired: sign in again")
        # The role and username are placeholders: revalidate reads them as they stand now.
        principal = await self._auth.revalidate(
            Principal(stored.user_id, "", Role.VIEWER, stored.via, stored.scopes, stored.key_id, None)
        )
        return BrowserSession(principal, derive_csrf(token), stored.expires_at)

    async def _stored(self, token_hash: str) -> _StoredSession | None:
        """The session row, from memory while the auth epoch has not moved since it was read. The
        epoch is read before the row, so a sign-out committed in between leaves it stale, not
        trusted. An unknown epoch (Redis away, the PostgreSQL listener down) means a read every time."""
        epoch = await self._auth.epoch.current()
        found = None if epoch is None else self._cache.get(token_hash, epoch)
        if found is not None:
            return found

        async def load() -> _StoredSession | None:
            async with self._db.reader() as session:
                row = await repo.session_by_hash(session, token_hash)
            if row is None:
                return None
            return _StoredSession(
                user_id=row.user_id,
                key_id=row.key_id,
                via="api_key" if row.via == "api_key" else "jwt",
                scopes=frozenset(Scope(s) for s in row.scopes) & ROLE_SCOPES[Role.ADMIN],
                expires_at=row.expires_at,
            )

        found = await self._loads.load(f"{epoch}:{token_hash}", load)
        if found is not None and epoch is not None:
            self._cache.put(token_hash, found, epoch)
        return found

    async def authenticate_request(self, token: str, method: str, csrf_token: str | None) -> Principal:
        """The REST guard's step 1 for a request carrying the session cookie instead of a credential:
        the session's principal; a change (POST, PUT, DELETE, ...) without the session's CSRF token
        in ``X-CSRF-Token`` is a 403."""
        found = await self.resolve(token)
        if method.upper() not in SAFE_METHODS and not csrf_matches(token, csrf_token):
            raise PermissionDenied(
                f"Missing or wrong CSRF token: a change made with the dashboard's session cookie needs the "
                f"page's token in the {CSRF_HEADER} header",
                details={"header": CSRF_HEADER},
            )
        return found.principal

    async def sign_out(self, token: str) -> bool:
        """End the session on every replica: the row is gone, then the auth epoch moves so no replica
        keeps trusting its cached copy. False if there was none."""
        if not token.startswith(SESSION_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return False
        token_hash = hash_api_key(token)
        async with self._db.transaction() as session:
            ended = await repo.delete_session(session, token_hash)
        self._cache.discard(token_hash)
        if ended:
            await self._auth.epoch.bump()
        return ended
