"""Document ingestion: each file becomes a document context plus one context per chunk.

A document context holds the whole text (type ``document`` unless overridden; metadata
``filename, kind, language, size, sha256, chunks, chunk_max_chars``; ``source`` = the name the file
was given as). Each chunk (see ``trellis.context.ingest.chunking``) becomes a context of type ``chunk`` (or
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
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trellis.context.index.base import ContextIndexer
from trellis.context.ingest import repository as repo
from trellis.context.ingest.chunking import (
    DEFAULT_MAX_CHARS,
    Chunk,
    FileKind,
    chunk_document,
    detect_kind,
    supported_names,
)
from trellis.context.ingest.schemas import IngestResult, IngestStatus
from trellis.context.repository import content_hash
from trellis.context.schemas import NAME_MAX_LENGTH, NAME_PATTERN
from trellis.kit.clock import Clock
from trellis.kit.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from trellis.kit.ids import new_id
from trellis.kit.logging import get_logger
from trellis.kit.ownership import Actor
from trellis.storage.database import Database

log = get_logger("trellis.context.ingest.service")

PART_OF = repo.PART_OF
DOCUMENT_TYPE = "document"
CHUNK_TYPE = "chunk"
MAX_SOURCE_LENGTH = 1024  # the contexts.source column
DEFAULT_MAX_FILE_BYTES = 1_048_576

IngestFile = tuple[str, bytes]


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


def _bad_file(name: str, problem: str, *, kind: str = "value_error", **details: Any) -> ValidationFailed:
    """A 400 naming the file: the ``files`` field, and ``details.file``."""
    message = f"{name or '(unnamed file)'}: {problem}"
    return ValidationFailed.of("files", message, type=kind, summary=message, file=name, **details)


_DRIVE = re.compile(r"^[A-Za-z]:")


def source_name(given: str) -> str:
    """The one rule for a document's ``source``, on every door: the given name read as a relative
    path. Backslashes are separators; a drive (``C:``) and leading slashes are dropped; ``.`` and
    ``..`` are resolved by the text alone, never climbing above the top. So ``C:\\x\\..\\a.md`` and
    ``/a.md`` are ``a.md``, and ``../../etc/passwd.txt`` is ``etc/passwd.txt``. (Multipart uploads
    arrive already cut at the last backslash, by the form parser: ``a.md`` again.)"""
    parts: list[str] = []
    for part in _DRIVE.sub("", given.replace("\\", "/")).split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


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

    def prepare(self, given: str, data: bytes) -> PreparedFile:
        """Validate one file and chunk it; raises 400 / 413 / 415 naming the file."""
        name = source_name(given)
        if not name or not name.strip() or "\x00" in name or len(name) > MAX_SOURCE_LENGTH:
            raise _bad_file(given[:100], f"a file name of 1-{MAX_SOURCE_LENGTH} characters is required")
        kind = detect_kind(name)
        if kind is None:
            raise UnsupportedMediaType(
                f"{name}: unsupported file type; supported: " + ", ".join(supported_names()),
                details={"file": name, "supported": supported_names()},
            )
        self.check_size(name, len(data))
        try:
            content = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _bad_file(name, f"not valid UTF-8 (at byte {exc.start})", offset=exc.start) from None
        if "\x00" in content:
            raise _bad_file(name, "contains NUL characters (a binary file?)")
        if not content.strip():
            raise _bad_file(name, "is empty")
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
            item = self.prepare(name, data)
            if item.source in seen:
                raise _bad_file(item.source, "given more than once", kind="duplicate")
            seen.add(item.source)
            prepared.append(item)
        return prepared

    @staticmethod
    def _types(type_override: str | None) -> tuple[str, str]:
        if type_override is None:
            return DOCUMENT_TYPE, CHUNK_TYPE
        if len(type_override) > NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, type_override):
            message = f"1-{NAME_MAX_LENGTH} letters, digits, '_', '-' or '.'"
            raise ValidationFailed.of(
                "type", message, type="pattern", summary=f"Invalid request parameters: type ({message})"
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
            raise ValidationFailed.of("files", "required", type="missing", summary="At least one file is required")
        # Decoding and chunking (ast.parse) of megabytes is CPU work: off the event loop.
        prepared = await asyncio.to_thread(self._prepare_all, files)

        owner = actor.user_id
        results: list[IngestResult] = []
        changes: list[_Change] = []
        async with self._db.transaction() as session:
            await repo.lock_sources(session, self._db.dialect, owner, [p.source for p in prepared])
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
        document = await repo.find_document(session, owner, item.source)
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
            await repo.insert_contexts(
                session,
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
            old_chunk_ids = await repo.chunk_ids(session, owner, document_id, item.source)
            await repo.delete_contexts(session, old_chunk_ids)  # their edges and embeddings cascade
            document.type = document_type
            document.content = item.text
            document.meta = metadata
            document.content_hash = content_hash(item.text)
            document.version = document.version + 1
            document.updated_at = now
            await session.flush()

        chunk_ids = [self._new_id("ctx") for _ in item.chunks]
        if item.chunks:
            await repo.insert_contexts(
                session,
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
            await repo.insert_relationships(
                session,
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
