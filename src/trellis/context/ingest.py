"""Document ingestion: each file becomes a document context plus one context per chunk.

A document context holds the whole text (type ``document`` unless overridden; metadata
``filename, kind, language, size, sha256, chunks, chunk_max_chars``; ``source`` = the name the file
was given as). Each chunk (see ``trellis.context.chunking``) becomes a context of type ``chunk`` (or
the override type) with the same ``source``, metadata ``index, start_line, end_line`` and
``heading_path`` (markdown) or ``definition`` (code), linked ``part_of`` → the document (1.0).

Rules:

- **One request, one transaction.** Every file is validated (name, kind, size, UTF-8, no NUL) before
  anything is written; then all files are written in one transaction: all or nothing.
- **Idempotent by (owner, source).** A file whose source, SHA-256, type and chunk size match the
  stored document changes nothing (``unchanged``, same ids). Otherwise the document keeps its id and
  gets the new content (version + 1), and ALL its old chunks are deleted and the new ones inserted
  in that same transaction (``replaced``); a failure anywhere leaves the old state intact.
- **Per user.** The same source name for two users names two documents.
- **Indexing off the request path.** After the commit, the new chunks and the document are handed
  to ``ContextIndexer.schedule`` (or ``index``, for the CLI, whose process is about to end); the
  replaced chunks to ``forget``. An indexer failure is logged; the data is committed regardless.

Concurrent ingests of the same source by the same user are serialized, so they cannot both create
a document: on PostgreSQL by a transaction-scoped advisory lock per (owner, source); on SQLite by
taking the database's write lock before the first read (the driver begins a transaction only at
the first write, so the transaction opens with a write that changes nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import delete, exists, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.chunking import DEFAULT_MAX_CHARS, Chunk, FileKind, chunk_document, detect_kind, supported_names
from trellis.context.indexing import ContextIndexer
from trellis.context.models import Context, ContextRelationship
from trellis.context.repository import content_hash
from trellis.context.schemas import NAME_MAX_LENGTH, NAME_PATTERN
from trellis.kit.clock import Clock
from trellis.kit.errors import PayloadTooLarge, TrellisError, UnsupportedMediaType, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.logging import get_logger
from trellis.kit.ownership import Actor
from trellis.storage.database import Database

log = get_logger("trellis.context.ingest")

PART_OF = "part_of"
DOCUMENT_TYPE = "document"
CHUNK_TYPE = "chunk"
MAX_SOURCE_LENGTH = 1024  # the contexts.source column
DEFAULT_MAX_FILE_BYTES = 1_048_576
_DELETE_BATCH = 500

IngestFile = tuple[str, bytes]


class IngestStatus(StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    REPLACED = "replaced"


class IngestResult(BaseModel):
    source: str = Field(description="The file's name or path, as given; the document's source.")
    document_id: str
    chunks: int = Field(description="How many chunk contexts the document has.")
    status: IngestStatus


@dataclass
class PreparedFile:
    source: str
    kind: FileKind
    text: str
    size: int
    sha256: str
    chunks: list[Chunk]

    def document_metadata(self, chunk_max_chars: int) -> dict[str, Any]:
        return {
            "filename": PurePosixPath(self.source.replace("\\", "/")).name,
            "kind": self.kind.kind.value,
            "language": self.kind.language,
            "size": self.size,
            "sha256": self.sha256,
            "chunks": len(self.chunks),
            "chunk_max_chars": chunk_max_chars,
        }


@dataclass
class _Change:
    document_id: str
    new_chunk_ids: list[str]
    old_chunk_ids: list[str] = field(default_factory=list)


ErrorT = TypeVar("ErrorT", bound=TrellisError)


def _file_error(error: type[ErrorT], name: str, problem: str, **details: Any) -> ErrorT:
    return error(f"{name or '(unnamed file)'}: {problem}", details={"file": name, **details})


class IngestService:
    """``new_id`` makes the ids of new rows; tests replace it to make a write fail halfway."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        indexer: ContextIndexer,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        chunk_max_chars: int = DEFAULT_MAX_CHARS,
        new_id: Callable[[str], str] = new_id,
    ) -> None:
        self._db = database
        self._clock = clock
        # Public, like ContextService.indexer, so the runtime can put the real indexer in.
        self.indexer = indexer
        self.max_file_bytes = max_file_bytes
        self.chunk_max_chars = chunk_max_chars
        self._new_id = new_id

    # --- validation --------------------------------------------------------------------------

    def check_size(self, name: str, size: int) -> None:
        """413 naming the file when it is over the per-file limit."""
        if size > self.max_file_bytes:
            raise PayloadTooLarge(
                f"{name}: {size} bytes; the limit per file is {self.max_file_bytes}",
                details={"file": name, "size_bytes": size, "max_bytes": self.max_file_bytes},
            )

    def prepare(self, name: str, data: bytes) -> PreparedFile:
        """Validate one file and chunk it; raises 400 / 413 / 415 naming the file."""
        if not name or not name.strip() or "\x00" in name or len(name) > MAX_SOURCE_LENGTH:
            raise _file_error(
                ValidationFailed, name[:100], f"a file name of 1-{MAX_SOURCE_LENGTH} characters is required"
            )
        kind = detect_kind(name)
        if kind is None:
            raise _file_error(
                UnsupportedMediaType,
                name,
                "unsupported file type; supported: " + ", ".join(supported_names()),
                supported=supported_names(),
            )
        self.check_size(name, len(data))
        try:
            content = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _file_error(
                ValidationFailed, name, f"not valid UTF-8 (at byte {exc.start})", offset=exc.start
            ) from None
        if "\x00" in content:
            raise _file_error(ValidationFailed, name, "contains NUL characters (a binary file?)")
        if not content.strip():
            raise _file_error(ValidationFailed, name, "is empty")
        return PreparedFile(
            source=name,
            kind=kind,
            text=content,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            chunks=chunk_document(content, kind, self.chunk_max_chars),
        )

    def _prepare_all(self, files: Sequence[IngestFile]) -> list[PreparedFile]:
        seen: set[str] = set()
        prepared: list[PreparedFile] = []
        for name, data in files:
            if name in seen:
                raise _file_error(ValidationFailed, name, "given more than once")
            seen.add(name)
            prepared.append(self.prepare(name, data))
        return prepared

    @staticmethod
    def _types(type_override: str | None) -> tuple[str, str]:
        if type_override is None:
            return DOCUMENT_TYPE, CHUNK_TYPE
        if len(type_override) > NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, type_override):
            message = f"1-{NAME_MAX_LENGTH} letters, digits, '_', '-' or '.'"
            raise ValidationFailed(
                f"Invalid request parameters: type ({message})",
                details={"fields": [{"field": "type", "location": "body", "message": message, "type": "pattern"}]},
            )
        return type_override, type_override

    # --- ingestion ---------------------------------------------------------------------------

    async def ingest(
        self,
        actor: Actor,
        files: Sequence[IngestFile],
        *,
        type_override: str | None = None,
        index_now: bool = False,
    ) -> list[IngestResult]:
        """Ingest files for ``actor``: results in the order given. ``index_now`` awaits the indexer."""
        document_type, chunk_type = self._types(type_override)
        if not files:
            raise ValidationFailed(
                "At least one file is required",
                details={"fields": [{"field": "files", "location": "body", "message": "required", "type": "missing"}]},
            )
        # Decoding and chunking (ast.parse) of megabytes is CPU work: off the event loop.
        prepared = await asyncio.to_thread(self._prepare_all, files)

        owner = actor.user_id
        results: list[IngestResult] = []
        changes: list[_Change] = []
        async with self._db.transaction() as session:
            await self._lock_sources(session, owner, [p.source for p in prepared])
            for item in prepared:
                result, change = await self._write(session, owner, item, document_type, chunk_type)
                results.append(result)
                if change is not None:
                    changes.append(change)
        for change in changes:
            await self._hand_to_indexer(owner, change, index_now)
        return results

    async def _write(
        self, session: AsyncSession, owner: str, item: PreparedFile, document_type: str, chunk_type: str
    ) -> tuple[IngestResult, _Change | None]:
        document = await _find_document(session, owner, item.source)
        if (
            document is not None
            and document.type == document_type
            and document.meta.get("sha256") == item.sha256
            and document.meta.get("chunk_max_chars") == self.chunk_max_chars
        ):
            chunks = document.meta.get("chunks")
            count = chunks if isinstance(chunks, int) else 0
            return IngestResult(
                source=item.source, document_id=document.id, chunks=count, status=IngestStatus.UNCHANGED
            ), None

        now = self._clock.now()
        metadata = item.document_metadata(self.chunk_max_chars)
        old_chunk_ids: list[str] = []
        if document is None:
            document_id = self._new_id("ctx")
            status = IngestStatus.CREATED
            await session.execute(
                insert(Context),
                [
                    {
                        "id": document_id,
                        "owner_id": owner,
                        "type": document_type,
                        "content": item.text,
                        "meta": metadata,
                        "content_hash": content_hash(item.text),
                        "version": 1,
                        "source": item.source,
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
        else:
            document_id = document.id
            status = IngestStatus.REPLACED
            old_chunk_ids = await _chunk_ids(session, owner, document_id, item.source)
            for start in range(0, len(old_chunk_ids), _DELETE_BATCH):
                # Their part_of edges (and any other edges, and embeddings) cascade.
                batch = old_chunk_ids[start : start + _DELETE_BATCH]
                await session.execute(
                    delete(Context).where(Context.id.in_(batch)).execution_options(synchronize_session=False)
                )
            document.type = document_type
            document.content = item.text
            document.meta = metadata
            document.content_hash = content_hash(item.text)
            document.version = document.version + 1
            document.updated_at = now
            await session.flush()

        chunk_ids = [self._new_id("ctx") for _ in item.chunks]
        if item.chunks:
            await session.execute(
                insert(Context),
                [
                    {
                        "id": chunk_id,
                        "owner_id": owner,
                        "type": chunk_type,
                        "content": chunk.text,
                        "meta": chunk.metadata(),
                        "content_hash": content_hash(chunk.text),
                        "version": 1,
                        "source": item.source,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for chunk_id, chunk in zip(chunk_ids, item.chunks, strict=True)
                ],
            )
            await session.execute(
                insert(ContextRelationship),
                [
                    {
                        "id": self._new_id("rel"),
                        "owner_id": owner,
                        "source_id": chunk_id,
                        "target_id": document_id,
                        "relationship_type": PART_OF,
                        "strength": 1.0,
                        "created_at": now,
                    }
                    for chunk_id in chunk_ids
                ],
            )
        result = IngestResult(source=item.source, document_id=document_id, chunks=len(chunk_ids), status=status)
        return result, _Change(document_id, chunk_ids, old_chunk_ids)

    async def _lock_sources(self, session: AsyncSession, owner: str, sources: Sequence[str]) -> None:
        """Serialize with other ingests of these sources before reading what is stored for them."""
        if self._db.dialect == "sqlite":
            # A write that changes nothing: BEGIN now, and hold the write lock from here to the commit.
            await session.execute(text("UPDATE contexts SET version = version WHERE 0 = 1"))
            return
        if self._db.dialect != "postgresql":
            return
        # One transaction-scoped advisory lock per (owner, source), taken in a fixed order.
        keys = sorted(
            {
                int.from_bytes(hashlib.sha256(f"ingest\x00{owner}\x00{s}".encode()).digest()[:8], "big", signed=True)
                for s in sources
            }
        )
        for key in keys:
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    async def _hand_to_indexer(self, owner: str, change: _Change, index_now: bool) -> None:
        try:
            if change.old_chunk_ids:
                await self.indexer.forget(owner, change.old_chunk_ids)
            ids = [*change.new_chunk_ids, change.document_id]
            if index_now:
                await self.indexer.index(owner, ids)
            else:
                self.indexer.schedule(owner, ids)
        except Exception:  # committed already; keyword search works until it is re-indexed
            log.exception("ingest_index_failed", document_id=change.document_id)


async def _find_document(session: AsyncSession, owner: str, source: str) -> Context | None:
    """The ingested document for this source: the owner's context with this source that is not a chunk."""
    is_part = exists().where(
        ContextRelationship.source_id == Context.id, ContextRelationship.relationship_type == PART_OF
    )
    rows = await session.scalars(
        select(Context)
        .where(Context.owner_id == owner, Context.source == source, ~is_part)
        .order_by(Context.created_at, Context.id)
    )
    for row in rows:
        if isinstance(row.meta, dict) and "sha256" in row.meta:
            return row
    return None


async def _chunk_ids(session: AsyncSession, owner: str, document_id: str, source: str) -> list[str]:
    """The document's chunks: contexts of the same owner and source that are part_of it."""
    rows = await session.scalars(
        select(Context.id)
        .join(ContextRelationship, ContextRelationship.source_id == Context.id)
        .where(
            ContextRelationship.target_id == document_id,
            ContextRelationship.relationship_type == PART_OF,
            Context.owner_id == owner,
            Context.source == source,
        )
        .order_by(Context.id)
    )
    return list(rows)
