"""Reading the episodic log: what every door (REST, CLI) calls. Writing is ``writer.py``."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from trellis.auth.schemas import Principal
from trellis.episodic import repository as repo
from trellis.episodic.models import EpisodicLog
from trellis.episodic.schemas import LogFilters
from trellis.kit.errors import PermissionDenied, ValidationFailed
from trellis.kit.ownership import visible_or_404
from trellis.storage.database import Database

MAX_PAGE = 200


def _as_utc(moment: datetime) -> datetime:
    # A datetime without an offset is read as UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_cursor(created_at: datetime, log_id: str) -> str:
    """Opaque to clients: base64url (unpadded) of a small JSON object naming the last row seen."""
    payload = json.dumps({"t": _as_utc(created_at).isoformat(timespec="microseconds"), "i": log_id})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    message = "Invalid cursor: pass back a next_cursor exactly as received"
    invalid = ValidationFailed.of("cursor", message, location="query", summary=message)
    if len(cursor) > 512:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        created_at = datetime.fromisoformat(payload["t"])
        log_id = payload["i"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(log_id, str) or created_at.tzinfo is None:
        raise invalid
    return created_at.astimezone(UTC), log_id


class EpisodicLogService:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def list(self, actor: Principal, filters: LogFilters) -> tuple[list[EpisodicLog], str | None]:
        """One page, newest first, and the cursor of the next page (None on the last)."""
        if not 1 <= filters.limit <= MAX_PAGE:
            message = f"limit must be between 1 and {MAX_PAGE}"
            raise ValidationFailed.of("limit", message, location="query", summary=message)
        owner_id: str | None
        if actor.is_admin:
            owner_id = filters.user_id
        elif filters.user_id is not None and filters.user_id != actor.user_id:
            raise PermissionDenied("Only administrators may read other users' logs")
        else:
            owner_id = actor.user_id
        since = _as_utc(filters.since) if filters.since is not None else None
        until = _as_utc(filters.until) if filters.until is not None else None
        if since is not None and until is not None and since > until:
            message = "since must not be later than until"
            raise ValidationFailed.of("since", message, location="query", summary=message)
        text_pattern = json_pattern = None
        if filters.q:
            text_pattern = repo.like_contains(filters.q)
            # Messages are stored as JSON text: match the text as JSON writes it (quotes, backslashes
            # and non-ASCII characters escaped), so such queries match messages too.
            json_pattern = repo.like_contains(json.dumps(filters.q)[1:-1])
        after = decode_cursor(filters.cursor) if filters.cursor else None
        query = repo.LogQuery(
            owner_id=owner_id,
            model=filters.model,
            status=filters.status,
            door=filters.door,
            since=since,
            until=until,
            text_pattern=text_pattern,
            json_pattern=json_pattern,
            limit=filters.limit + 1,
            after=after,
        )
        async with self._db.session() as session:
            rows = await repo.page(session, query)
        if len(rows) <= filters.limit:
            return rows, None
        rows = rows[: filters.limit]
        last = rows[-1]
        return rows, encode_cursor(last.created_at, last.id)

    async def get(self, actor: Principal, log_id: str) -> EpisodicLog:
        async with self._db.session() as session:
            found = await repo.log_by_id(session, log_id)
        return visible_or_404(found, actor, what="Log entry", object_id=log_id)
