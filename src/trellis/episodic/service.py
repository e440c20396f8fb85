"""Reading the episodic log: what every door (REST, CLI) calls. Writing is ``writer.py``."""

from __future__ import annotations

import json

from trellis.auth.schemas import Principal
from trellis.episodic import repository as repo
from trellis.episodic.models import EpisodicLog
from trellis.episodic.schemas import LogFilters
from trellis.kit.clock import as_utc
from trellis.kit.cursor import decode_keyset, encode_keyset
from trellis.kit.errors import PermissionDenied, ValidationFailed
from trellis.kit.ownership import visible_or_404
from trellis.storage.database import Database

MAX_PAGE = 200


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
        since = as_utc(filters.since) if filters.since is not None else None
        until = as_utc(filters.until) if filters.until is not None else None
        if since is not None and until is not None and since > until:
            message = "since must not be later than until"
            raise ValidationFailed.of("since", message, location="query", summary=message)
        text_pattern = json_pattern = None
        if filters.q:
            text_pattern = repo.like_contains(filters.q)
            # Messages are stored as JSON text: match the text as JSON writes it (quotes, backslashes
            # and non-ASCII characters escaped), so such queries match messages too.
            json_pattern = repo.like_contains(json.dumps(filters.q)[1:-1])
        after = decode_keyset(filters.cursor) if filters.cursor else None
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
        return rows, encode_keyset(last.created_at, last.id)

    async def get(self, actor: Principal, log_id: str) -> EpisodicLog:
        async with self._db.session() as session:
            found = await repo.log_by_id(session, log_id)
        return visible_or_404(found, actor, what="Log entry", object_id=log_id)
