"""The one rule for reading user-owned rows: another user's object looks exactly like a missing one.

Answering 404 (not 403) for a foreign id means ids cannot be probed for existence.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from trellis.kit.errors import NotFound


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
