"""Request and response shapes of the context store's core: contexts, relationships, the graph."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from trellis.context.models import Context, ContextRelationship
from trellis.kit.clock import as_utc
from trellis.kit.errors import ValidationFailed
from trellis.kit.pagination import Page
from trellis.kit.requests import RequestModel
from trellis.storage.metadata_filter import MetadataFilter

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


class RelationshipCreate(RequestModel):
    target_context_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    relationship_type: RelationshipType
    strength: Strength = 1.0


class ContextCreate(RequestModel):
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


class ContextUpdate(RequestModel):
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


class ContextPage(Page[ContextOut]):
    pass


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


# --- listing ---------------------------------------------------------------------------------------

MAX_PAGE = 200
DEFAULT_PAGE = 50


class ContextSort(StrEnum):
    """A column, newest first with a leading ``-``."""

    CREATED = "created"
    CREATED_DESC = "-created"
    UPDATED = "updated"
    UPDATED_DESC = "-updated"

    @property
    def column(self) -> str:
        return self.value.lstrip("-") + "_at"

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


@dataclass(frozen=True, slots=True)
class ContextListQuery:
    """A page of one owner's contexts, every value checked (the REST and CLI doors build it).
    ``owner``: the caller's own when None; an administrator may name a user id or ``all``."""

    types: tuple[str, ...] = ()
    metadata: MetadataFilter = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    sort: ContextSort = ContextSort.UPDATED_DESC
    limit: int = DEFAULT_PAGE
    cursor: str | None = None
    owner: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        types: Iterable[str] = (),
        metadata: MetadataFilter | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        sort: str = ContextSort.UPDATED_DESC.value,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        owner: str | None = None,
    ) -> ContextListQuery:
        def invalid(name: str, message: str) -> ValidationFailed:
            return ValidationFailed.of(name, message, location="query")

        wanted: list[str] = []
        for raw in types:
            for name in raw.split(","):
                name = name.strip()
                if name and (len(name) > NAME_MAX_LENGTH or not re.match(NAME_PATTERN, name)):
                    raise invalid("type", f"{name!r} is not a context type (1-64 letters, digits, '_', '-', '.')")
                if name:
                    wanted.append(name)
        try:
            order = ContextSort(sort)
        except ValueError:
            raise invalid("sort", f"must be one of {', '.join(s.value for s in ContextSort)}") from None
        if not 1 <= limit <= MAX_PAGE:
            raise invalid("limit", f"must be between 1 and {MAX_PAGE}")
        bounds = {
            "created_after": created_after and as_utc(created_after),
            "created_before": created_before and as_utc(created_before),
            "updated_after": updated_after and as_utc(updated_after),
            "updated_before": updated_before and as_utc(updated_before),
        }
        for column in ("created", "updated"):
            after, before = bounds[f"{column}_after"], bounds[f"{column}_before"]
            if after is not None and before is not None and after >= before:
                raise invalid(f"{column}_before", f"must be later than {column}_after")
        return cls(
            tuple(dict.fromkeys(wanted)),
            dict(metadata or {}),
            sort=order,
            limit=limit,
            cursor=cursor,
            owner=owner,
            **bounds,
        )
