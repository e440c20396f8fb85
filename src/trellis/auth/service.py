"""Authentication and account management: what every door (REST, CLI, later GraphQL) calls."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from trellis.auth import repository as repo
from trellis.auth.cache import AuthEpoch, EpochCache, NoAuthEpoch, SingleFlight
from trellis.auth.models import ApiKey, User, WsTicket
from trellis.auth.schemas import (
    ROLE_SCOPES,
    ApiKeyCreate,
    Principal,
    Scope,
    TokenResponse,
    UserCreate,
    WsTicketOut,
)
from trellis.kit.clock import Clock
from trellis.kit.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.ownership import visible_or_404
from trellis.settings import Role, Settings
from trellis.storage.database import Database

API_KEY_PREFIX = "trl_"
TICKET_PREFIX = "wst_"
_VISIBLE_PREFIX_LEN = 12


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    created: bool
    username: str
    # Set only when a key was generated here (not given through settings): print it once.
    generated_key: str | None


class AuthService:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        jwt_secret: str,
        clock: Clock,
        epoch: AuthEpoch | None = None,
    ) -> None:
        self._db = database
        self._epoch = epoch or NoAuthEpoch()
        self._key_cache: EpochCache[repo.KeyCredential] = EpochCache(clock)
        self._user_cache: EpochCache[repo.UserState] = EpochCache(clock)
        self._key_loads: SingleFlight[repo.KeyCredential | None] = SingleFlight()
        self._user_loads: SingleFlight[repo.UserState | None] = SingleFlight()
        self._settings = settings
        self._secret = jwt_secret
        self._clock = clock
        self._hasher = PasswordHasher()
        # Verified against when the username is unknown, so timing does not reveal which users exist.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        # Counts this process's own changes that took access away (long-lived connections watch it).
        self.changes = 0

    # --- credentials -------------------------------------------------------------------------

    async def authenticate(self, credential: str) -> Principal:
        """A bearer credential is either a JWT (three dot-separated parts) or an API key."""
        if credential.count(".") == 2 and not credential.startswith(API_KEY_PREFIX):
            return await self.authenticate_jwt(credential)
        return await self.authenticate_api_key(credential)

    async def authenticate_api_key(self, key: str) -> Principal:
        key_hash = hash_api_key(key)
        # The epoch is read before the database, so a revocation committed in between moves it.
        epoch = await self._epoch.current()
        found = None if epoch is None else self._key_cache.get(key_hash, epoch)
        if found is None:

            async def load() -> repo.KeyCredential | None:
                async with self._db.engine.connect() as conn:
                    return await repo.key_credential(conn, key_hash)

            found = await self._key_loads.load(f"{epoch}:{key_hash}", load)
            if found is not None and epoch is not None:
                self._key_cache.put(key_hash, found, epoch)
        if found is None:
            raise AuthenticationFailed("Invalid API key")
        return self._key_principal(found)

    def _key_principal(self, found: repo.KeyCredential) -> Principal:
        if found.revoked_at is not None:
            raise AuthenticationFailed("API key has been revoked")
        if found.expires_at is not None and found.expires_at <= self._clock.now():
            raise AuthenticationFailed("API key has expired")
        if found.disabled:
            raise AuthenticationFailed("User is disabled")
        role = Role(found.role)
        scopes = ROLE_SCOPES[role]
        if found.scopes is not None:
            scopes = scopes & frozenset(Scope(s) for s in found.scopes)
        return Principal(found.user_id, found.username, role, "api_key", scopes, found.key_id, found.expires_at)

    async def authenticate_jwt(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self._settings.jwt_algorithm],
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("Token has expired") from None
        except jwt.InvalidTokenError:
            raise AuthenticationFailed("Invalid token") from None
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
        return await self._jwt_principal(str(claims["sub"]), expires_at)

    async def _jwt_principal(self, user_id: str, expires_at: datetime | None) -> Principal:
        epoch = await self._epoch.current()
        user = None if epoch is None else self._user_cache.get(user_id, epoch)
        if user is None:

            async def load() -> repo.UserState | None:
                async with self._db.engine.connect() as conn:
                    return await repo.user_state(conn, user_id)

            user = await self._user_loads.load(f"{epoch}:{user_id}", load)
            if user is not None and epoch is not None:
                self._user_cache.put(user_id, user, epoch)
        if user is None or user.disabled:
            raise AuthenticationFailed("User is disabled or no longer exists")
        role = Role(user.role)
        return Principal(user.user_id, user.username, role, "jwt", ROLE_SCOPES[role], expires_at=expires_at)

    async def revalidate(self, principal: Principal) -> Principal:
        """The principal as it stands now, for a connection that authenticated a while ago: its key
        revoked or expired, its token expired, its user disabled → ``AuthenticationFailed``. Reads go
        through the epoch-tagged cache, so this costs a database read only after access changed.
        Scopes are never widened beyond those the connection was opened with."""
        if principal.expires_at is not None and principal.expires_at <= self._clock.now():
            raise AuthenticationFailed("Token has expired" if principal.via == "jwt" else "API key has expired")
        if principal.via == "api_key":
            if principal.key_id is None:
                raise AuthenticationFailed("Invalid API key")
            epoch = await self._epoch.current()
            cache_key = f"id:{principal.key_id}"
            found = None if epoch is None else self._key_cache.get(cache_key, epoch)
            if found is None:
                key_id = principal.key_id

                async def load() -> repo.KeyCredential | None:
                    async with self._db.engine.connect() as conn:
                        return await repo.key_credential_by_id(conn, key_id)

                found = await self._key_loads.load(f"{epoch}:{cache_key}", load)
                if found is not None and epoch is not None:
                    self._key_cache.put(cache_key, found, epoch)
            if found is None:
                raise AuthenticationFailed("API key has been deleted")
            now = self._key_principal(found)
        else:
            now = await self._jwt_principal(principal.user_id, principal.expires_at)
        return replace(now, scopes=now.scopes & principal.scopes)

    # --- WebSocket tickets -------------------------------------------------------------------

    async def issue_ticket(self, actor: Principal) -> WsTicketOut:
        """A single-use credential standing for ``actor``, valid ``[ws] ticket_ttl_seconds``: the only
        credential ``/ws`` takes in its URL (``?ticket=``), where a browser cannot set headers."""
        plaintext = TICKET_PREFIX + secrets.token_urlsafe(32)
        now = self._clock.now()
        ttl = self._settings.ws.ticket_ttl_seconds
        ticket = WsTicket(
            token_hash=hash_api_key(plaintext),
            user_id=actor.user_id,
            key_id=actor.key_id,
            via=actor.via,
            scopes=sorted(s.value for s in actor.scopes),
            credential_expires_at=actor.expires_at,
            expires_at=now + timedelta(seconds=ttl),
            created_at=now,
        )
        async with self._db.transaction() as session:
            await repo.purge_tickets(session, now)
            session.add(ticket)
        return WsTicketOut(ticket=plaintext, expires_at=ticket.expires_at, expires_in=ttl)

    async def redeem_ticket(self, plaintext: str) -> Principal:
        """Use a ticket (once: it is gone afterwards, used or refused) and return whom it stands for,
        as that credential stands now."""
        if not plaintext.startswith(TICKET_PREFIX) or len(plaintext) > 100:
            raise AuthenticationFailed("Invalid ticket")
        async with self._db.transaction() as session:
            ticket = await repo.take_ticket(session, hash_api_key(plaintext))
        if ticket is None:
            raise AuthenticationFailed("Invalid ticket, or already used")
        if ticket.expires_at <= self._clock.now():
            raise AuthenticationFailed("Ticket has expired")
        via: Literal["api_key", "jwt"] = "api_key" if ticket.via == "api_key" else "jwt"
        granted = frozenset(Scope(s) for s in ticket.scopes)
        issued = Principal(ticket.user_id, "", Role.VIEWER, via, granted, ticket.key_id, ticket.credential_expires_at)
        return await self.revalidate(issued)

    async def login(self, username: str, password: str) -> TokenResponse:
        async with self._db.session() as session:
            user = await repo.user_by_username(session, username)
        stored = user.password_hash if user is not None and user.password_hash else self._dummy_hash
        valid = await asyncio.to_thread(self._verify_password, stored, password)
        if user is None or user.password_hash is None or not valid or user.disabled:
            raise AuthenticationFailed("Invalid username or password")
        return self.issue_token(user)

    def _verify_password(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def issue_token(self, user: User) -> TokenResponse:
        now = self._clock.now()
        expires = now + timedelta(seconds=self._settings.jwt_ttl_seconds)
        claims = {
            "sub": user.id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "jti": secrets.token_hex(8),
            "role": user.role,
        }
        token = jwt.encode(claims, self._secret, algorithm=self._settings.jwt_algorithm)
        return TokenResponse(access_token=token, expires_in=self._settings.jwt_ttl_seconds, expires_at=expires)

    # --- users -------------------------------------------------------------------------------

    async def create_user(self, actor: Principal, data: UserCreate) -> User:
        _require_admin(actor)
        password_hash = await asyncio.to_thread(self._hasher.hash, data.password) if data.password else None
        user = User(
            id=new_id("usr"),
            username=data.username,
            password_hash=password_hash,
            role=data.role.value,
            disabled=False,
            created_at=self._clock.now(),
        )
        try:
            async with self._db.transaction() as session:
                session.add(user)
        except IntegrityError:
            raise Conflict("Username already taken", details={"username": data.username}) from None
        return user

    async def list_users(self, actor: Principal) -> list[User]:
        _require_admin(actor)
        async with self._db.session() as session:
            return await repo.list_users(session)

    async def set_user_disabled(self, actor: Principal, user_id: str, disabled: bool) -> User:
        _require_admin(actor)
        if disabled and user_id == actor.user_id:
            raise Conflict("You cannot disable your own account")
        async with self._db.transaction() as session:
            user = await repo.user_by_id(session, user_id)
            if user is None:
                raise NotFound("User not found", details={"id": user_id})
            user.disabled = disabled
        await self._access_changed()
        return user

    # --- API keys ----------------------------------------------------------------------------

    async def create_key(self, actor: Principal, data: ApiKeyCreate) -> tuple[ApiKey, str]:
        owner_id = data.user_id or actor.user_id
        if owner_id != actor.user_id:
            _require_admin(actor)
        async with self._db.transaction() as session:
            owner = await repo.user_by_id(session, owner_id)
            if owner is None:
                raise NotFound("User not found", details={"id": owner_id})
            if data.scopes is not None:
                beyond = sorted(set(data.scopes) - ROLE_SCOPES[Role(owner.role)])
                if beyond:
                    names = [s.value for s in beyond]
                    raise ValidationFailed.of(
                        "scopes",
                        f"not in the owner's role ({owner.role}): {', '.join(names)}",
                        summary="A key cannot have scopes its owner's role lacks",
                        scopes=names,
                    )
            # A credential cannot mint a key broader than itself (omitted scopes mean the whole role).
            granted = ROLE_SCOPES[Role(owner.role)] if data.scopes is None else frozenset(data.scopes)
            lacking = sorted(granted - actor.scopes)
            if lacking:
                raise PermissionDenied(
                    "A key cannot have scopes the credential creating it lacks",
                    details={"scopes": [s.value for s in lacking]},
                )
            plaintext = generate_api_key()
            now = self._clock.now()
            key = ApiKey(
                id=new_id("key"),
                owner_id=owner.id,
                name=data.name,
                prefix=plaintext[:_VISIBLE_PREFIX_LEN],
                key_hash=hash_api_key(plaintext),
                scopes=None if data.scopes is None else sorted(s.value for s in set(data.scopes)),
                expires_at=now + timedelta(days=data.expires_in_days) if data.expires_in_days else None,
                created_at=now,
            )
            session.add(key)
        return key, plaintext

    async def list_keys(self, actor: Principal, user_id: str | None = None) -> list[ApiKey]:
        if user_id is not None and user_id != actor.user_id:
            _require_admin(actor)
        if user_id is None and not actor.is_admin:
            user_id = actor.user_id
        async with self._db.session() as session:
            return await repo.list_keys(session, user_id)

    async def revoke_key(self, actor: Principal, key_id: str) -> ApiKey:
        async with self._db.transaction() as session:
            key = visible_or_404(await repo.key_by_id(session, key_id), actor, what="API key", object_id=key_id)
            if key.revoked_at is None:
                key.revoked_at = self._clock.now()
        await self._access_changed()
        return key

    @property
    def epoch(self) -> AuthEpoch:
        """Where this process learns that another took access away (see trellis.auth.cache)."""
        return self._epoch

    async def aclose(self) -> None:
        await self._epoch.aclose()

    async def _access_changed(self) -> None:
        """After a commit that takes access away: no cache anywhere may keep serving it."""
        self.changes += 1
        self._key_cache.clear()
        self._user_cache.clear()
        await self._epoch.bump()

    # --- first start -------------------------------------------------------------------------

    async def bootstrap_admin(self) -> BootstrapResult:
        """Create the first admin (and its key) when there are no users at all."""
        username = self._settings.bootstrap_admin_username
        async with self._db.session() as session:
            if await repo.count_users(session) > 0:
                return BootstrapResult(False, username, None)
        given = self._settings.bootstrap_admin_key
        plaintext = given.get_secret_value() if given else generate_api_key()
        password = self._settings.bootstrap_admin_password
        password_hash = await asyncio.to_thread(self._hasher.hash, password.get_secret_value()) if password else None
        now = self._clock.now()
        user = User(
            id=new_id("usr"),
            username=username,
            password_hash=password_hash,
            role=Role.ADMIN.value,
            disabled=False,
            created_at=now,
        )
        key = ApiKey(
            id=new_id("key"),
            owner_id=user.id,
            name="bootstrap admin key",
            prefix=plaintext[:_VISIBLE_PREFIX_LEN],
            key_hash=hash_api_key(plaintext),
            scopes=None,
            created_at=now,
        )
        try:
            async with self._db.transaction() as session:
                session.add(user)
                await session.flush()
                session.add(key)
        except IntegrityError:
            # Another process bootstrapped at the same moment; theirs stands.
            return BootstrapResult(False, username, None)
        return BootstrapResult(True, username, None if given else plaintext)


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise PermissionDenied("Administrator role required")
