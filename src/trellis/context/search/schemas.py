"""What a search takes and gives: the validated query every door builds, the result the service
returns, and the response models the doors answer with."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from trellis.context.index.base import VectorFilter
from trellis.context.models import Context
from trellis.context.schemas import NAME_MAX_LENGTH, NAME_PATTERN, ContextOut
from trellis.kit.errors import ValidationFailed
from trellis.storage.metadata_filter import MetadataFilter

MAX_LIMIT = 100
DEFAULT_LIMIT = 10
MAX_QUERY_CHARS = 1000
MAX_TYPES = 20
_TYPE = re.compile(NAME_PATTERN)


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    SEMANTIC = "semantic"
    KEYWORD = "keyword"


Retriever = Literal["keyword", "semantic"]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    mode: SearchMode = SearchMode.HYBRID
    types: tuple[str, ...] = ()
    metadata: MetadataFilter = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(
        cls,
        query: str | None,
        *,
        mode: str | None = None,
        types: Iterable[str] = (),
        metadata: MetadataFilter | None = None,
        limit: int | None = None,
    ) -> SearchQuery:
        """Validate raw input from any door; a bad value is a 400 naming its field."""
        if query is None or not query.strip():
            raise ValidationFailed.of("query", "must not be empty", location="query", type="missing")
        if len(query) > MAX_QUERY_CHARS:
            raise ValidationFailed.of(
                "query", f"at most {MAX_QUERY_CHARS} characters", location="query", type="too_long"
            )
        chosen = SearchMode.HYBRID
        if mode is not None:
            try:
                chosen = SearchMode(mode)
            except ValueError:
                raise ValidationFailed.of(
                    "mode", f"must be one of {', '.join(m.value for m in SearchMode)}", location="query", type="enum"
                ) from None
        size = DEFAULT_LIMIT if limit is None else limit
        if not 1 <= size <= MAX_LIMIT:
            raise ValidationFailed.of("limit", f"must be between 1 and {MAX_LIMIT}", location="query")
        wanted: list[str] = []
        for raw in types:
            for name in raw.split(","):
                name = name.strip()
                if not name:
                    continue
                if len(name) > NAME_MAX_LENGTH or not _TYPE.match(name):
                    raise ValidationFailed.of(
                        "type",
                        f"{name!r} is not a context type (1-64 letters, digits, '_', '-', '.')",
                        location="query",
                        type="pattern",
                    )
                wanted.append(name)
        if len(wanted) > MAX_TYPES:
            raise ValidationFailed.of("type", f"at most {MAX_TYPES} types", location="query", type="too_long")
        return cls(query.strip(), chosen, tuple(dict.fromkeys(wanted)), dict(metadata or {}), size)

    @property
    def filters(self) -> VectorFilter:
        return VectorFilter(types=self.types, metadata=self.metadata)


@dataclass(frozen=True, slots=True)
class RetrieverRank:
    rank: int  # 1-based, within that retriever's answer
    score: float  # keyword: -bm25 (SQLite) or ts_rank (PostgreSQL); semantic: cosine similarity


@dataclass(slots=True)
class SearchHit:
    context: Context
    score: float  # hybrid: the RRF score; one retriever: its own score
    retrievers: dict[Retriever, RetrieverRank]


@dataclass(slots=True)
class SearchResult:
    query: SearchQuery
    hits: list[SearchHit]
    model: str | None = None  # the embedding model the semantic retriever used
    degraded: list[Retriever] = field(default_factory=list)  # retrievers that could not run


class RetrieverRankOut(BaseModel):
    rank: int = Field(description="1-based position in this retriever's own ranking.")
    score: float = Field(description="keyword: -bm25 (SQLite) or ts_rank (PostgreSQL); semantic: cosine similarity.")


class SearchHitOut(BaseModel):
    context: ContextOut
    score: float = Field(description="hybrid: reciprocal-rank-fusion score; otherwise the retriever's score.")
    retrievers: dict[Retriever, RetrieverRankOut] = Field(description="Which retrievers found it, at what rank.")


class SearchOut(BaseModel):
    query: str
    mode: SearchMode
    limit: int
    types: list[str]
    metadata: dict[str, list[Any]]
    model: str | None = Field(description="The embedding model the semantic retriever used.")
    degraded: list[Retriever] = Field(description="Retrievers that could not run (hybrid falls back to the rest).")
    items: list[SearchHitOut]

    @classmethod
    def of(cls, result: SearchResult) -> SearchOut:
        query = result.query
        return cls(
            query=query.text,
            mode=query.mode,
            limit=query.limit,
            types=list(query.types),
            metadata={key: list(values) for key, values in query.metadata.items()},
            model=result.model,
            degraded=list(result.degraded),
            items=[
                SearchHitOut(
                    context=ContextOut.of(hit.context),
                    score=hit.score,
                    retrievers={
                        name: RetrieverRankOut(rank=r.rank, score=r.score) for name, r in hit.retrievers.items()
                    },
                )
                for hit in result.hits
            ],
        )
