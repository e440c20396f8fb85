"""Request and response shapes for authentication, users and API keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from trellis.kit.requests import RequestModel
from trellis.settings import Role


class Scope(StrEnum):
    """What a credential may do. A key's scopes narrow its owner's role, never widen it."""

    READ = "read"
    WRITE = "write"
    AI = "ai"
    ADMIN = "admin"


ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.ADMIN: frozenset(Scope),
    Role.DEVELOPER: frozenset({Scope.READ, Scope.WRITE, Scope.AI}),
    Role.VIEWER: frozenset({Scope.READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and with what."""

    user_id: str
    username: str
    role: Role
    via: Literal["api_key", "jwt"]
    scopes: frozenset[Scope] = field(default_factory=frozenset)
    key_id: str | None = None
    # When the credential stops being valid (a key's expiry, a token's exp); None: not by itself.
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN and Scope.ADMIN in self.scopes

    @property
    def rate_limit_subject(self) -> str:
        """Whose budget a request spends: the user's, whichever of their keys or tokens it carries
        (more keys must not mean more requests)."""
        return f"user:{self.user_id}"


Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{3,64}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


class TokenRequest(RequestModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a scheme name
    expires_in: int
    expires_at: datetime


class UserCreate(RequestModel):
    username: Username
    password: Password | None = Field(default=None, description="Omit for an API-key-only user.")
    role: Annotated[Role, Strict(False)] = Role.DEVELOPER


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    username: str
    role: Role
    disabled: bool
    created_at: datetime


class ApiKeyCreate(RequestModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
    scopes: list[Annotated[Scope, Strict(False)]] | None = Field(
        default=None, description="Omit for all of the owner's permissions."
    )
    expires_in_days: Annotated[int, Field(gt=0, le=3650)] | None = None
    user_id: str | None = Field(default=None, description="Admins only: create the key for this user.")


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    owner_id: str
    name: str
    prefix: str
    scopes: list[Scope] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself. Shown once: it is stored only as a hash.")


class WsTicketOut(BaseModel):
    ticket: str = Field(description="Pass as /ws?ticket=...; it works once, until expires_at.")
    expires_at: datetime
    expires_in: int = Field(description="Seconds.")


class Me(BaseModel):
    id: str
    username: str
    role: Role
    auth: Literal["api_key", "jwt"]
    key_id: str | None
    scopes: list[Scope]
