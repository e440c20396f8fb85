"""The context store's core: contexts, their relationships and the graph. Every door calls this.

Contexts belong to their owner: another user's context answers 404 exactly like a missing one
(``visible_or_404``), so ids cannot be probed. Administrators see everything (issue 16): they read
any user's context, its relationships and graph, and list another user's (``owner``) or everyone's
contexts; writes (update, delete, relationships) stay the owner's only, and an administrator's write
to another user's context answers 404 like any foreign id. Search stays per owner (the caller's own
index). Relationships join two contexts of one owner.

Writes are optimistic: every context carries a ``version``, bumped by each update. An update or
delete given the version it is based on (``If-Match`` or ``version``) is one compare-and-set
statement, so of two writers holding the same version exactly one wins and the other gets 409
with the current version; an update given no version is retried on the newest one (last writer
wins, nothing is lost in between). After a commit that changes content, the indexer embeds it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError

from trellis.auth.schemas import Principal
from trellis.context import repository as repo
from trellis.context.index.base import ContextIndexer
from trellis.context.models import Context, ContextRelationship
from trellis.context.schemas import (
    ContextCreate,
    ContextDeleted,
    ContextListQuery,
    ContextSort,
    ContextUpdate,
    Direction,
    GraphEdge,
    GraphNode,
    GraphOut,
    RelationshipCreate,
    RelationshipOut,
    version_etag,
)
from trellis.kit.clock import Clock
from trellis.kit.cursor import decode_keyset, encode_keyset
from trellis.kit.errors import Conflict, FieldError, NotFound, PayloadTooLarge, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.logging import get_logger
from trellis.kit.ownership import owner_scope, visible_or_404
from trellis.settings import Settings
from trellis.storage.database import Database

log = get_logger("trellis.context")

# An update without a version retries this many times when other writers keep winning.
MAX_WRITE_ATTEMPTS = 8
# Ids are ``ctx_`` + 32 hex digits; anything much longer cannot name a row.
_MAX_ID_LENGTH = 64


def _stale(current_version: int, expected_version: int) -> Conflict:
    return Conflict(
        f"Version conflict: the context is at version {current_version}, not {expected_version}",
        details={"current_version": current_version, "expected_version": expected_version},
        headers={"ETag": version_etag(current_version)},
    )


def _context_not_found(context_id: str) -> NotFound:
    return NotFound("Context not found", details={"id": context_id})


def _owned(row: Context | None, actor: Principal, context_id: str) -> Context:
    """The context if the actor may change it: their own only, administrators included."""
    return visible_or_404(row, actor, what="Context", object_id=context_id, admin_sees_all=False)


def _readable(row: Context | None, actor: Principal, context_id: str) -> Context:
    """The context if the actor may read it: their own, or anyone's for an administrator."""
    return visible_or_404(row, actor, what="Context", object_id=context_id)


def _read_owner(actor: Principal) -> str | None:
    """The owner a batched read is limited to (``None``: any, for an administrator)."""
    return None if actor.is_admin else actor.user_id


class ContextService:
    def __init__(self, database: Database, settings: Settings, clock: Clock, indexer: ContextIndexer) -> None:
        self._db = database
        self._limits = settings.context
        self._clock = clock
        # Public so the runtime can put the real indexer in once it is built.
        self.indexer = indexer

    def known_types(self) -> list[str]:
        return list(self._limits.known_types)

    # --- contexts ----------------------------------------------------------------------------

    async def list_page(self, actor: Principal, query: ContextListQuery) -> tuple[list[Context], str | None]:
        """A page of the actor's own contexts and the cursor of the next; an administrator may name
        another owner or ``all`` (``query.owner``), anyone else only themselves (403)."""
        owner = owner_scope(actor, query.owner, what="contexts")
        after = decode_keyset(query.cursor, s=query.sort.value) if query.cursor is not None else None
        async with self._db.reader() as session:
            rows = await repo.list_page(session, self._db.dialect, owner, query, after)
        if len(rows) < query.limit:
            return rows, None
        return rows, page_cursor(rows[-1], query.sort)

    async def create(
        self, actor: Principal, data: ContextCreate, *, source: str | None = None
    ) -> tuple[Context, list[ContextRelationship]]:
        """Create a context with its outgoing relationships, in one transaction: all or nothing."""
        self._check_size(data.content)
        links = data.relationships or []
        seen: set[tuple[str, str]] = set()
        for index, link in enumerate(links):
            key = (link.target_context_id, link.relationship_type)
            if key in seen:
                message = "Duplicate relationship (same target and type)"
                raise ValidationFailed.of(f"relationships.{index}", message, summary=message)
            seen.add(key)
        now = self._clock.now()
        context = Context(
            id=new_id("ctx"),
            owner_id=actor.user_id,
            type=data.type,
            content=data.content,
            meta=data.metadata or {},
            content_hash=repo.content_hash(data.content),
            version=1,
            source=source,
            created_at=now,
            updated_at=now,
        )
        edges = [
            ContextRelationship(
                id=new_id("rel"),
                owner_id=actor.user_id,
                source_id=context.id,
                target_id=link.target_context_id,
                relationship_type=link.relationship_type,
                strength=link.strength,
                created_at=now,
            )
            for link in links
        ]
        try:
            async with self._db.transaction() as session:
                if links:
                    targets = await repo.contexts_by_ids(session, actor.user_id, {x.target_context_id for x in links})
                    for index, link in enumerate(links):
                        if link.target_context_id not in targets:
                            raise NotFound(
                                "Relationship target not found",
                                details={
                                    "id": link.target_context_id,
                                    "field": f"relationships.{index}.target_context_id",
                                },
                            )
                session.add(context)
                await session.flush()
                session.add_all(edges)
        except IntegrityError:
            # A target was deleted between the check and the insert; nothing was written.
            raise NotFound("Relationship target not found") from None
        await self._index(actor.user_id, [context.id])
        return context, edges

    async def get(self, actor: Principal, context_id: str) -> Context:
        """A context the actor may read (an administrator: anyone's)."""
        if len(context_id) > _MAX_ID_LENGTH:
            raise _context_not_found(context_id)
        async with self._db.session() as session:
            return _readable(await repo.context_by_id(session, context_id), actor, context_id)

    async def get_own(self, actor: Principal, context_id: str) -> Context:
        """A context the actor may change: their own only (an administrator's read of another user's
        context is ``get``; a door about to write reads with this, so it fails before any work)."""
        if len(context_id) > _MAX_ID_LENGTH:
            raise _context_not_found(context_id)
        async with self._db.session() as session:
            return _owned(await repo.context_by_id(session, context_id), actor, context_id)

    async def get_many(self, actor: Principal, context_ids: Collection[str]) -> dict[str, Context]:
        """The contexts among these ids the actor may read (as ``get``), in one query; missing and
        unreadable ids are simply absent (a door that batches reads, GraphQL's loaders, answers them
        as not found)."""
        wanted = {i for i in context_ids if len(i) <= _MAX_ID_LENGTH}
        if not wanted:
            return {}
        async with self._db.reader() as session:
            return await repo.contexts_by_ids(session, _read_owner(actor), wanted)

    async def update(
        self, actor: Principal, context_id: str, data: ContextUpdate, *, expected_version: int | None = None
    ) -> Context:
        """Replace the fields given. ``expected_version`` (If-Match) or ``data.version``: 409 when stale."""
        if data.type is None and data.content is None and data.metadata is None:
            raise ValidationFailed.of("", "Nothing to update: give type, content or metadata")
        if data.content is not None:
            self._check_size(data.content)
        if expected_version is not None and data.version is not None and expected_version != data.version:
            message = "version and If-Match disagree"
            raise ValidationFailed.of("version", message, summary=message)
        expected = expected_version if expected_version is not None else data.version
        values: dict[Any, Any] = {}
        if data.type is not None:
            values[Context.type] = data.type
        if data.content is not None:
            values[Context.content] = data.content
            values[Context.content_hash] = repo.content_hash(data.content)
        if data.metadata is not None:
            values[Context.meta] = data.metadata

        for _ in range(MAX_WRITE_ATTEMPTS):
            current = await self.get_own(actor, context_id)
            if expected is not None and current.version != expected:
                raise _stale(current.version, expected)
            values[Context.updated_at] = self._clock.now()
            async with self._db.transaction() as session:
                if await repo.update_if_version(session, context_id, actor.user_id, current.version, values):
                    updated = await repo.context_by_id(session, context_id)
                    assert updated is not None
                    break
            if expected is not None:
                # Another writer holding the same version committed first (or deleted it).
                latest = await self.get_own(actor, context_id)
                raise _stale(latest.version, expected)
        else:
            raise Conflict("The context kept changing under this update; try again")
        if updated.content_hash != current.content_hash:
            await self._index(actor.user_id, [context_id])
        return updated

    async def delete(self, actor: Principal, context_id: str, *, expected_version: int | None = None) -> ContextDeleted:
        """Delete a context; its relationships (both directions) and its embedding go with it."""
        current = await self.get_own(actor, context_id)
        if expected_version is not None and current.version != expected_version:
            raise _stale(current.version, expected_version)
        async with self._db.transaction() as session:
            removed = await repo.count_relationships_of(session, context_id)
            deleted = await repo.delete_context(session, context_id, actor.user_id, expected_version)
        if not deleted:
            if expected_version is None:
                raise _context_not_found(context_id)
            latest = await self.get_own(actor, context_id)
            raise _stale(latest.version, expected_version)
        try:
            await self.indexer.forget(actor.user_id, [context_id])
        except Exception:  # the row is gone; a stale cache entry must not turn that into a 500
            log.exception("context_forget_failed", context_id=context_id)
        return ContextDeleted(id=context_id, relationships_removed=removed)

    # --- relationships -----------------------------------------------------------------------

    async def add_relationship(self, actor: Principal, context_id: str, data: RelationshipCreate) -> RelationshipOut:
        """An edge from this context to another of the caller's. The same (target, type) twice: 409."""
        target_id = data.target_context_id
        async with self._db.session() as session:
            found = await repo.contexts_by_ids(session, actor.user_id, {context_id, target_id})
        _owned(found.get(context_id), actor, context_id)
        if target_id == context_id:
            message = "A context cannot have a relationship with itself"
            raise ValidationFailed.of("target_context_id", message, summary=message)
        if target_id not in found:
            raise NotFound("Relationship target not found", details={"id": target_id, "field": "target_context_id"})
        edge = ContextRelationship(
            id=new_id("rel"),
            owner_id=actor.user_id,
            source_id=context_id,
            target_id=target_id,
            relationship_type=data.relationship_type,
            strength=data.strength,
            created_at=self._clock.now(),
        )
        try:
            async with self._db.transaction() as session:
                existing = await repo.find_relationship(session, context_id, target_id, data.relationship_type)
                if existing is not None:
                    raise _duplicate(existing)
                session.add(edge)
        except IntegrityError:
            # Lost a race: the same edge was just created, or an end was just deleted.
            async with self._db.session() as session:
                existing = await repo.find_relationship(session, context_id, target_id, data.relationship_type)
            if existing is not None:
                raise _duplicate(existing) from None
            raise NotFound("Context not found", details={"id": target_id}) from None
        return RelationshipOut.of(edge, context_id)

    async def list_relationships(
        self,
        actor: Principal,
        context_id: str,
        *,
        relationship_type: str | None = None,
        direction: Direction | None = None,
    ) -> list[RelationshipOut]:
        """Both directions (or one), oldest first, each marked outgoing or incoming."""
        context = await self.get(actor, context_id)
        async with self._db.session() as session:
            rows = await repo.relationships_touching(
                session,
                context.owner_id,
                [context_id],
                relationship_type=relationship_type,
                outgoing=direction in (None, "outgoing"),
                incoming=direction in (None, "incoming"),
            )
        return [RelationshipOut.of(row, context_id) for row in rows]

    async def relationships_of_many(
        self,
        actor: Principal,
        context_ids: Collection[str],
        *,
        relationship_type: str | None = None,
        direction: Direction | None = None,
    ) -> dict[str, list[RelationshipOut]]:
        """``list_relationships`` for many contexts in one query, each context's list oldest first.
        Ids the actor may not read get an empty list: only the actor's edges are read (an
        administrator's: every owner's, as ``get`` lets them read every context)."""
        ids = list(dict.fromkeys(context_ids))
        out: dict[str, list[RelationshipOut]] = {context_id: [] for context_id in ids}
        if not ids:
            return out
        outgoing, incoming = direction in (None, "outgoing"), direction in (None, "incoming")
        async with self._db.reader() as session:
            rows = await repo.relationships_touching(
                session,
                _read_owner(actor),
                ids,
                relationship_type=relationship_type,
                outgoing=outgoing,
                incoming=incoming,
            )
        for row in rows:
            if outgoing and row.source_id in out:
                out[row.source_id].append(RelationshipOut.of(row, row.source_id))
            if incoming and row.target_id in out and row.target_id != row.source_id:
                out[row.target_id].append(RelationshipOut.of(row, row.target_id))
        return out

    async def delete_relationship(self, actor: Principal, context_id: str, relationship_id: str) -> RelationshipOut:
        await self.get_own(actor, context_id)
        async with self._db.transaction() as session:
            edge = await repo.relationship_by_id(session, relationship_id)
            if (
                edge is None
                or edge.owner_id != actor.user_id
                or context_id not in (edge.source_id, edge.target_id)
                or not await repo.delete_relationship(session, relationship_id, actor.user_id)
            ):
                raise NotFound("Relationship not found", details={"id": relationship_id})
        return RelationshipOut.of(edge, context_id)

    # --- graph -------------------------------------------------------------------------------

    async def graph(
        self, actor: Principal, context_id: str, *, depth: int = 2, relationship_type: str | None = None
    ) -> GraphOut:
        """Breadth-first over relationships in both directions, to ``depth`` levels.

        One query per level (the edges touching the whole frontier), then one for every node's
        row: never a query per node. A visited set handles cycles; the node limit stops it early.
        """
        limit = self._limits.max_graph_nodes
        if not 1 <= depth <= self._limits.max_graph_depth:
            message = f"depth must be between 1 and {self._limits.max_graph_depth}"
            raise ValidationFailed.of("depth", message, location="query", summary=message)
        root = await self.get(actor, context_id)
        depths: dict[str, int] = {root.id: 0}
        edges: dict[str, ContextRelationship] = {}
        frontier = [root.id]
        truncated = False
        async with self._db.session() as session:
            for level in range(1, depth + 1):
                if not frontier or truncated:
                    break
                # The root's owner: an administrator reading another user's graph sees that user's.
                touching = await repo.relationships_touching(
                    session, root.owner_id, frontier, relationship_type=relationship_type
                )
                discovered: list[str] = []
                for edge in touching:
                    for end in (edge.source_id, edge.target_id):
                        if end in depths:
                            continue
                        if len(depths) >= limit:
                            truncated = True
                            continue
                        depths[end] = level
                        discovered.append(end)
                    if edge.source_id in depths and edge.target_id in depths:
                        edges.setdefault(edge.id, edge)
                frontier = discovered
            rows = await repo.contexts_by_ids(session, root.owner_id, [i for i in depths if i != root.id])
        rows[root.id] = root
        nodes = [GraphNode.of(rows[i], d) for i, d in depths.items() if i in rows]
        return GraphOut(
            root=root.id,
            depth=depth,
            relationship_type=relationship_type,
            nodes=nodes,
            edges=[
                GraphEdge(
                    id=e.id,
                    source_id=e.source_id,
                    target_id=e.target_id,
                    relationship_type=e.relationship_type,
                    strength=e.strength,
                )
                for e in edges.values()
                if e.source_id in rows and e.target_id in rows
            ],
            truncated=truncated,
        )

    # --- helpers -----------------------------------------------------------------------------

    def _check_size(self, content: str) -> None:
        limit = self._limits.max_content_bytes
        size = len(content.encode())
        if size > limit:
            message = f"content is {size} bytes; the limit is {limit}"
            raise PayloadTooLarge(
                message,
                details={
                    "fields": [FieldError(field="content", message=message, location="body", type="too_large")],
                    "max_bytes": limit,
                    "size_bytes": size,
                },
            )

    async def _index(self, owner_id: str, context_ids: Sequence[str]) -> None:
        try:
            await self.indexer.index(owner_id, context_ids)
        except Exception:  # committed already; keyword search works until it is re-indexed
            log.exception("context_index_failed", context_ids=list(context_ids))


def page_cursor(row: Context, sort: ContextSort) -> str:
    """The cursor of the page that starts after ``row`` in ``sort`` order (each listed row has one)."""
    moment = row.created_at if sort.column == "created_at" else row.updated_at
    return encode_keyset(moment, row.id, s=sort.value)


def _duplicate(existing: ContextRelationship) -> Conflict:
    return Conflict(
        "This relationship already exists (same source, target and type)",
        details={"relationship_id": existing.id},
    )
