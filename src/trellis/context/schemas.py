"""Request and response shapes of the context store's core: contexts, relationships, the graph."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from trellis.context.models import Context, ContextRelationship

NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
NAME_MAX_LENGTH = 64
# How much of a context's content a graph node carries.
PREVIEW_CHARS = 200
MAX_RELATIONSHIPS_ON_CREATE = 100

ContextType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN),
    Field(description="Free-form, 1-64 letters, digits, '_', '-' or '.'; see GET /api/context/types."),
]
RelationshipType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN),
    Field(description="1-64 letters, digits, '_', '-' or '.', e.g. depends_on, implements, part_of."),
]
Strength = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, description="From 0 to 1.")]
Direction = Literal["outgoing", "incoming"]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("content must not be empty")
    return value


class RelationshipCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_context_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    relationship_type: RelationshipType
    strength: Strength = 1.0


class ContextCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ContextType
    content: Annotated[str, Field(min_length=1, description="Any text; at most [context] max_content_bytes.")]
    metadata: dict[str, Any] | None = Field(default=None, description="A JSON object.")
    relationships: list[RelationshipCreate] | None = Field(
        default=None,
        max_length=MAX_RELATIONSHIPS_ON_CREATE,
        description="Outgoing relationships, created with the context or not at all.",
    )

    @field_validator("content")
    @classmethod
    def _content_not_blank(cls, value: str) -> str:
        return _not_blank(value)


class ContextUpdate(BaseModel):
    """Fields given replace the stored ones (metadata as a whole); fields omitted are kept."""

    model_config = ConfigDict(extra="forbid")

    type: ContextType | None = None
    content: Annotated[str, Field(min_length=1)] | None = None
    metadata: dict[str, Any] | None = Field(default=None, description="A JSON object; replaces the stored one.")
    version: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="The version this write is based on (or send If-Match); stale → 409."
    )

    @field_validator("content")
    @classmethod
    def _content_not_blank(cls, value: str | None) -> str | None:
        return None if value is None else _not_blank(value)


class ContextOut(BaseModel):
    id: str
    owner_id: str
    type: str
    content: str
    metadata: dict[str, Any]
    version: int
    content_hash: str
    source: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Context) -> ContextOut:
        return cls(
            id=row.id,
            owner_id=row.owner_id,
            type=row.type,
            content=row.content,
            metadata=dict(row.meta or {}),
            version=row.version,
            content_hash=row.content_hash,
            source=row.source,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class RelationshipOut(BaseModel):
    id: str
    source_id: str
    target_id: str
    relationship_type: str
    strength: float
    created_at: datetime
    direction: Direction = Field(description="Relative to the context in the path: outgoing (it is the source).")

    @classmethod
    def of(cls, row: ContextRelationship, seen_from: str) -> RelationshipOut:
        return cls(
            id=row.id,
            source_id=row.source_id,
            target_id=row.target_id,
            relationship_type=row.relationship_type,
            strength=row.strength,
            created_at=row.created_at,
            direction="outgoing" if row.source_id == seen_from else "incoming",
        )


class ContextCreated(ContextOut):
    relationships: list[RelationshipOut]


class ContextDeleted(BaseModel):
    id: str
    deleted: Literal[True] = True
    relationships_removed: int


class ContextTypes(BaseModel):
    known_types: list[str]
    pattern: str = NAME_PATTERN
    max_length: int = NAME_MAX_LENGTH
    custom_allowed: Literal[True] = Field(default=True, description="Any type matching the pattern is accepted.")


class GraphNode(BaseModel):
    id: str
    type: str
    depth: int
    content_preview: str
    metadata: dict[str, Any]

    @classmethod
    def of(cls, row: Context, depth: int) -> GraphNode:
        content = row.content
        preview = content if len(content) <= PREVIEW_CHARS else content[: PREVIEW_CHARS - 1] + "…"
        return cls(id=row.id, type=row.type, depth=depth, content_preview=preview, metadata=dict(row.meta or {}))


class GraphEdge(BaseModel):
    id: str
    source_id: str
    target_id: str
    relationship_type: str
    strength: float


class GraphOut(BaseModel):
    root: str
    depth: int = Field(description="The depth asked for.")
    relationship_type: str | None
    nodes: list[GraphNode] = Field(description="Breadth-first: the root (depth 0), then each level.")
    edges: list[GraphEdge] = Field(description="The relationships traversed, between nodes in the answer.")
    truncated: bool = Field(description="True when the node limit stopped the traversal early.")


_VERSION_TAG = re.compile(r'^(?:W/)?"?([0-9]{1,18})"?$')


def parse_version_tag(value: str) -> int | None:
    """An ``If-Match`` value as a version: ``3``, ``"3"`` or ``W/"3"``; ``*`` means any (None).

    Raises ``ValueError`` for anything else (several tags included).
    """
    value = value.strip()
    if value == "*":
        return None
    match = _VERSION_TAG.match(value)
    if match is None or value.count('"') not in (0, 2):
        raise ValueError('If-Match must be a version: 3, "3" or W/"3"')
    version = int(match.group(1))
    if version < 1:
        raise ValueError("If-Match version must be at least 1")
    return version


def version_etag(version: int) -> str:
    return f'"{version}"'
