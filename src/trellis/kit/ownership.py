"""The one rule for reading user-owned rows: another user's object looks exactly like a missing one.

Answering 404 (not 403) for a foreign id means ids cannot be probed for existence.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from trellis.kit.errors import NotFound, PermissionDenied


class Owned(Protocol):
    @property
    def owner_id(self) -> str: ...


class Actor(Protocol):
    @property
    def user_id(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...


OwnedT = TypeVar("OwnedT", bound=Owned)


def visible_or_404(
    obj: OwnedT | None, actor: Actor, *, what: str, object_id: str, admin_sees_all: bool = True
) -> OwnedT:
    if obj is None or (obj.owner_id != actor.user_id and not (admin_sees_all and actor.is_admin)):
        raise NotFound(f"{what} not found", details={"id": object_id})
    return obj


ALL_OWNERS = "all"


def owner_scope(actor: Actor, owner: str | None, *, what: str) -> str | None:
    """Whose rows a listing reads (``None``: everyone's). Admins see every user's rows and may name
    one user or ``all``; anyone else may only name themselves (the default). Refused with 403 rather
    than 404: the filter names no object, and the answer is the same whether that user exists or not."""
    if owner is None or owner == actor.user_id:
        return actor.user_id
    if not actor.is_admin:
        raise PermissionDenied(f"only an admin can read other users' {what}", details={"owner": owner})
    return None if owner == ALL_OWNERS else owner
