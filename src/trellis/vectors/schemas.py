"""Request and response shapes for raw vector collections (``/api/v1/db/vectors``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from trellis.kit.requests import RequestModel
from trellis.kit.vector_math import from_blob
from trellis.vectors.models import VectorCollection, VectorItem

MAX_DIMENSIONS = 4096
MAX_ITEMS_PER_REQUEST = 1000
MAX_TOP_K = 100
MAX_TEXT_CHARS = 20_000

CollectionName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$"),
    Field(description="1-100 letters, digits, '_', '-' or '.'; unique among your collections."),
]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=200), Field(description="Your id for the item.")]
# Stored as float32: a number beyond its range would become infinite, so it is refused (400) here.
FLOAT32_MAX = 3.4028234663852886e38
Vector = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]],
    Field(min_length=1, max_length=MAX_DIMENSIONS),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]


class CollectionCreate(RequestModel):
    name: CollectionName
    dimensions: Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="An embedding model (see /api/v1/ai/models): items and queries given as text are embedded "
        "with it. Without one, send vectors.",
    )


class CollectionOut(BaseModel):
    id: str
    name: str
    dimensions: int
    model: str | None
    metric: str = Field(default="cosine", description="Scores are cosine similarity (-1..1).")
    item_count: int
    created_at: datetime

    @classmethod
    def of(cls, row: VectorCollection, item_count: int) -> CollectionOut:
        return cls(
            id=row.id,
            name=row.name,
            dimensions=row.dimensions,
            model=row.model,
            item_count=item_count,
            created_at=row.created_at,
        )


class CollectionDeleted(BaseModel):
    name: str
    deleted: bool = True
    items_removed: int


# The rule _VectorOrText enforces, said in its JSON schema: a vector (an array) and no text, or a text
# (a string) and no vector; an explicit null counts as absent.
_VECTOR_OR_TEXT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"required": ["vector"], "properties": {"vector": {"type": "array"}, "text": {"type": "null"}}},
        {"required": ["text"], "properties": {"text": {"type": "string"}, "vector": {"type": "null"}}},
    ]
}


class _VectorOrText(RequestModel):
    model_config = ConfigDict(json_schema_extra=_VECTOR_OR_TEXT_SCHEMA)

    vector: Vector | None = None
    text: Text | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> _VectorOrText:
        if (self.vector is None) == (self.text is None):
            raise ValueError("give either a vector or a text (embedded with the collection's model), not both")
        return self


class ItemIn(_VectorOrText):
    model_config = ConfigDict(extra="forbid")

    id: ItemId
    metadata: dict[str, Any] = Field(default_factory=dict)


class ItemsUpsert(RequestModel):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)


class ItemsUpserted(BaseModel):
    upserted: int
    ids: list[str]


class ItemOut(BaseModel):
    id: str
    metadata: dict[str, Any]
    text: str | None
    vector: list[float] | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, item: VectorItem, *, with_vector: bool = True) -> ItemOut:
        return cls(
            id=item.item_id,
            metadata=dict(item.meta or {}),
            text=item.text,
            vector=from_blob(item.vector).tolist() if with_vector else None,
            updated_at=item.updated_at,
        )


class QueryIn(_VectorOrText):
    model_config = ConfigDict(extra="forbid")

    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 10
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description='Metadata equality: {"lang": "en"}; a list means any of: {"lang": ["en", "fr"]}.',
    )
    include_vectors: bool = False


class QueryHit(ItemOut):
    score: float = Field(description="Cosine similarity to the query, -1..1.")

    @classmethod
    def hit(cls, item: VectorItem, score: float, *, with_vector: bool) -> QueryHit:
        return cls(**ItemOut.of(item, with_vector=with_vector).model_dump(), score=score)


class QueryOut(BaseModel):
    collection: str
    model: str | None = Field(description="The model that embedded a text query.")
    hits: list[QueryHit]


class ItemsDelete(RequestModel):
    ids: list[ItemId] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)


class ItemsDeleted(BaseModel):
    deleted: int
