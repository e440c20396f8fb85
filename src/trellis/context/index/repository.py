"""The SQL of the vector index that both implementations share: writing vectors (refusing stale
ones), deleting them, and the ids a search's filters allow; the indexer's reads; and the embedding
state with the reindex job (its lease-fenced writes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.index.base import VectorEntry, VectorFilter
from trellis.context.index.models import ContextEmbedding, EmbeddingState
from trellis.context.models import Context
from trellis.kit.vector_math import as_vector, pg_vector_literal, to_blob
from trellis.storage.database import Database
from trellis.storage.metadata_filter import metadata_clause

_UPSERT = """
INSERT INTO context_embeddings (context_id, owner_id, model, dimensions, vector, content_hash{extra_columns})
SELECT id, owner_id, :model, :dimensions, :vector, content_hash{extra_values}
FROM contexts WHERE id = :context_id AND owner_id = :owner_id AND content_hash = :content_hash
ON CONFLICT (context_id, model) DO UPDATE SET
  dimensions = excluded.dimensions, vector = excluded.vector,
  content_hash = excluded.content_hash{extra_updates}
"""

_PG_UPSERT = """
INSERT INTO context_embeddings (context_id, owner_id, model, dimensions, vector, content_hash{extra_columns})
SELECT c.id, c.owner_id, :model, v.dimensions, v.vector, c.content_hash{extra_values}
FROM unnest(
  CAST(:ids AS text[]), CAST(:hashes AS text[]), CAST(:dimensions AS integer[]), CAST(:vectors AS bytea[]){extra_arrays}
) AS v(context_id, content_hash, dimensions, vector{extra_names})
JOIN contexts c ON c.id = v.context_id AND c.owner_id = :owner_id AND c.content_hash = v.content_hash
ORDER BY c.id
ON CONFLICT (context_id, model) DO UPDATE SET
  dimensions = excluded.dimensions, vector = excluded.vector,
  content_hash = excluded.content_hash{extra_updates}
"""


def filtered_ids(dialect: str, owner_id: str, filters: VectorFilter) -> Select[Any]:
    query = select(Context.id).where(Context.owner_id == owner_id)
    if filters.types:
        query = query.where(Context.type.in_(filters.types))
    clause = metadata_clause(dialect, Context.meta, filters.metadata)
    if clause is not None:
        query = query.where(clause)
    return query


async def delete_rows(database: Database, owner_id: str, context_ids: Sequence[str]) -> None:
    if not context_ids:
        return
    async with database.transaction() as session:
        await session.execute(
            ContextEmbedding.__table__.delete().where(  # type: ignore[attr-defined]
                and_(ContextEmbedding.owner_id == owner_id, ContextEmbedding.context_id.in_(list(context_ids)))
            )
        )


async def upsert_rows(
    database: Database,
    owner_id: str,
    model: str,
    entries: Sequence[VectorEntry],
    *,
    pg_dimensions: int | None = None,
) -> None:
    """Write vectors to ``context_embeddings`` (and to ``embedding`` when ``pg_dimensions`` is set).

    On PostgreSQL the batch is ONE statement over arrays, rows in ``context_id`` order: its row
    locks are taken in a stable order and the vector-epoch trigger (migration 0004) runs once, after
    them. Sent row by row (an executemany), each row's statement would take the owner's epoch lock
    and then further row locks while holding it, and two overlapping batches could deadlock."""
    if not entries:
        return
    latest: dict[str, VectorEntry] = {entry.context_id: entry for entry in entries}  # the last one wins
    vectors = {context_id: as_vector(entry.vector) for context_id, entry in latest.items()}
    if database.dialect != "postgresql":
        rows: list[dict[str, Any]] = [
            {
                "context_id": context_id,
                "owner_id": owner_id,
                "content_hash": latest[context_id].content_hash,
                "model": model,
                "dimensions": int(vector.shape[0]),
                "vector": to_blob(vector),
            }
            for context_id, vector in vectors.items()
        ]
        async with database.transaction() as session:
            await session.execute(text(_UPSERT.format(extra_columns="", extra_values="", extra_updates="")), rows)
        return
    ordered = sorted(vectors)
    parameters: dict[str, Any] = {
        "owner_id": owner_id,
        "model": model,
        "ids": ordered,
        "hashes": [latest[context_id].content_hash for context_id in ordered],
        "dimensions": [int(vectors[context_id].shape[0]) for context_id in ordered],
        "vectors": [to_blob(vectors[context_id]) for context_id in ordered],
    }
    if pg_dimensions is None:
        sql = _PG_UPSERT.format(extra_arrays="", extra_names="", extra_columns="", extra_values="", extra_updates="")
    else:
        parameters["embeddings"] = [
            pg_vector_literal(vectors[c]) if vectors[c].shape[0] == pg_dimensions else None for c in ordered
        ]
        sql = _PG_UPSERT.format(
            extra_arrays=", CAST(:embeddings AS text[])",
            extra_names=", embedding",
            extra_columns=", embedding",
            extra_values=", CAST(v.embedding AS vector)",
            extra_updates=", embedding = excluded.embedding",
        )
    async with database.transaction() as session:
        await session.execute(text(sql), parameters)


# --- the indexer's reads ------------------------------------------------------------------------


class ContentToEmbed(NamedTuple):
    id: str
    content: str
    content_hash: str
    source: str | None = None
    meta: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """What is embedded: the content, headed by where it sits (``embedding_text``)."""
        return embedding_text(self.content, self.source, self.meta)


def heading_label(source: str | None, meta: dict[str, Any] | None) -> str:
    """Where a context sits, as one line: its document (``source``) and, for a chunk, its heading
    path (markdown) or definition (code): ``packages/httpx.md > Install > With pip``."""
    parts: list[str] = [source] if source else []
    path = (meta or {}).get("heading_path")
    if isinstance(path, list):
        parts.extend(str(part) for part in path if part)
    definition = (meta or {}).get("definition")
    if isinstance(definition, str) and definition:
        parts.append(definition)
    return " > ".join(parts)


def embedding_text(content: str, source: str | None, meta: dict[str, Any] | None) -> str:
    """The text a context's vector is computed from: its label (document and heading path) on a line
    of its own, then the content. A chunk alone often lacks the words that say what it is about
    ("Installation", a code block): the label carries its document's name and section. Contexts
    without a source (notes, decisions) are embedded as they are."""
    label = heading_label(source, meta)
    return f"{label}\n\n{content}" if label else content


async def contents(session: AsyncSession, owner_id: str, context_ids: Sequence[str]) -> list[ContentToEmbed]:
    """The owner's contexts among ``context_ids``, with what their vectors are computed from."""
    statement = select(Context.id, Context.content, Context.content_hash, Context.source, Context.meta).where(
        Context.owner_id == owner_id, Context.id.in_(list(context_ids))
    )
    return [ContentToEmbed(*row) for row in (await session.execute(statement)).all()]


async def stored_hashes(session: AsyncSession, model: str, context_ids: Sequence[str]) -> dict[str, str]:
    """context id -> content_hash of the vector of ``model`` stored for it."""
    statement = select(ContextEmbedding.context_id, ContextEmbedding.content_hash).where(
        ContextEmbedding.model == model, ContextEmbedding.context_id.in_(list(context_ids))
    )
    return {row.context_id: row.content_hash for row in await session.execute(statement)}


def _lacking(model: str) -> Select[str, str]:
    """Contexts without a current vector of ``model`` (none, or one of other content)."""
    return (
        select(Context.owner_id, Context.id)
        .outerjoin(ContextEmbedding, and_(ContextEmbedding.context_id == Context.id, ContextEmbedding.model == model))
        .where(or_(ContextEmbedding.context_id.is_(None), ContextEmbedding.content_hash != Context.content_hash))
    )


async def missing_or_stale(session: AsyncSession, model: str, limit: int) -> list[tuple[str, str]]:
    """(owner, context id) of contexts with no vector of ``model``, or one of other content."""
    statement = _lacking(model).order_by(Context.owner_id, Context.id).limit(limit)
    return [(owner_id, context_id) for owner_id, context_id in (await session.execute(statement)).all()]


async def lacking_after(session: AsyncSession, model: str, cursor: str, limit: int) -> list[tuple[str, str]]:
    """(owner, context id), in id order, of contexts after ``cursor`` lacking a current vector of
    ``model``: the reindex's next batch. The walk is along the contexts' primary key, so a batch
    costs its own rows whatever the store's size."""
    statement = _lacking(model).where(Context.id > cursor).order_by(Context.id).limit(limit)
    return [(owner_id, context_id) for owner_id, context_id in (await session.execute(statement)).all()]


async def count_contexts(session: AsyncSession, *, after: str | None = None) -> int:
    statement = select(func.count()).select_from(Context)
    if after is not None:
        statement = statement.where(Context.id <= after)
    return int((await session.execute(statement)).scalar_one())


async def delete_other_models(database: Database, model: str) -> int:
    """Drop every vector not of ``model`` (after a switch: the old model's). Returns how many."""
    async with database.transaction() as session:
        result = await session.execute(
            ContextEmbedding.__table__.delete().where(ContextEmbedding.model != model)  # type: ignore[attr-defined]
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def most_common_model(session: AsyncSession) -> str | None:
    """The model most stored vectors have (pinning the active model on a store that has vectors)."""
    statement = (
        select(ContextEmbedding.model)
        .group_by(ContextEmbedding.model)
        .order_by(func.count().desc(), ContextEmbedding.model)
        .limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


# --- the embedding state and the reindex job (``context_embedding_state``, one row) ---------------

STATE_ID = "context"
RUNNING = "running"


async def read_state(session: AsyncSession) -> EmbeddingState | None:
    result = await session.execute(select(EmbeddingState).where(EmbeddingState.id == STATE_ID))
    return result.scalar_one_or_none()


async def pin_active_model(session: AsyncSession, model: str) -> str | None:
    """Make ``model`` the active model unless one already is (another process may have pinned one
    meanwhile: that one stays). Returns the active model after."""
    row = await read_state(session)
    if row is None:  # the row the migration made is gone: make it again
        session.add(EmbeddingState(id=STATE_ID, active_model=model, status="idle", total=0, done=0))
        return model
    await session.execute(
        update(EmbeddingState)
        .where(EmbeddingState.id == STATE_ID, EmbeddingState.active_model.is_(None))
        .values(active_model=model)
    )
    row = await read_state(session)
    return row.active_model if row is not None else None


async def start_job(
    session: AsyncSession, *, job_id: str, target: str, requested_by: str, total: int, now: datetime
) -> bool:
    """Start a job unless one runs (a compare-and-set on the status). Returns whether it started."""
    result = await session.execute(
        update(EmbeddingState)
        .where(EmbeddingState.id == STATE_ID, EmbeddingState.status != RUNNING)
        .values(
            status=RUNNING,
            job_id=job_id,
            target_model=target,
            previous_model=EmbeddingState.active_model,
            requested_by=requested_by,
            total=total,
            done=0,
            cursor="",
            error=None,
            lease_owner=None,
            lease_expires_at=None,
            started_at=now,
            updated_at=now,
            finished_at=None,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def claim_lease(
    session: AsyncSession, *, job_id: str, held_by: str | None, worker_id: str, expires_at: float
) -> bool:
    """Take the running job's lease from ``held_by`` (as read; None: nobody). Returns whether won."""
    result = await session.execute(
        update(EmbeddingState)
        .where(
            EmbeddingState.id == STATE_ID,
            EmbeddingState.job_id == job_id,
            EmbeddingState.status == RUNNING,
            # Compare-and-set on the lease as read: two claimants, one winner.
            EmbeddingState.lease_owner.is_(None) if held_by is None else EmbeddingState.lease_owner == held_by,
        )
        .values(lease_owner=worker_id, lease_expires_at=expires_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _fence(job_id: str, worker_id: str) -> tuple[ColumnElement[bool], ...]:
    """The fence on every write of a running job: ``worker_id`` still holds its lease."""
    return (
        EmbeddingState.id == STATE_ID,
        EmbeddingState.job_id == job_id,
        EmbeddingState.status == RUNNING,
        EmbeddingState.lease_owner == worker_id,
    )


async def advance_job(
    session: AsyncSession, job_id: str, worker_id: str, cursor: str, now: datetime, expires_at: float
) -> bool:
    """Store the cursor and the progress (contexts up to it, of all) and renew the lease, fenced.
    False: the lease was lost."""
    total = await count_contexts(session)
    done = await count_contexts(session, after=cursor) if cursor else 0
    result = await session.execute(
        update(EmbeddingState)
        .where(*_fence(job_id, worker_id))
        .values(cursor=cursor, total=total, done=done, updated_at=now, lease_expires_at=expires_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def finish_job(
    session: AsyncSession, *, job_id: str, worker_id: str, target: str, total: int, now: datetime
) -> bool:
    """Make ``target`` the active model and end the job, fenced. False: the lease was lost."""
    result = await session.execute(
        update(EmbeddingState)
        .where(*_fence(job_id, worker_id))
        .values(
            active_model=target,
            status="done",
            total=total,
            done=total,
            cursor=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
            finished_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def fail_job(session: AsyncSession, *, job_id: str, worker_id: str, error: str, now: datetime) -> None:
    """Mark the job failed with ``error`` (while ``worker_id`` holds its lease) and free the lease."""
    await session.execute(
        update(EmbeddingState)
        .where(
            EmbeddingState.id == STATE_ID,
            EmbeddingState.job_id == job_id,
            EmbeddingState.lease_owner == worker_id,
        )
        .values(
            status="failed",
            error=error,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
            finished_at=now,
        )
    )


async def release_lease(session: AsyncSession, worker_id: str) -> None:
    """Give back the lease ``worker_id`` holds, if it does."""
    await session.execute(
        update(EmbeddingState)
        .where(EmbeddingState.id == STATE_ID, EmbeddingState.lease_owner == worker_id)
        .values(lease_owner=None, lease_expires_at=None)
    )
