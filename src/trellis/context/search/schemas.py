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


class Grouping(StrEnum):
    CONTEXT = "context"  # one hit per context (chunk, document, note...): the default
    DOCUMENT = "document"  # one hit per document: its contexts' scores fused, its best context shown


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    mode: SearchMode = SearchMode.HYBRID
    types: tuple[str, ...] = ()
    metadata: MetadataFilter = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    group: Grouping = Grouping.CONTEXT
    passages: bool = False  # each hit carries the text of its best-matching chunk
    rerank: bool = False  # a cross-encoder reorders the best fused candidates (trellis.context.search.rerank)

    @classmethod
    def parse(
        cls,
        query: str | None,
        *,
        mode: str | None = None,
        types: Iterable[str] = (),
        metadata: MetadataFilter | None = None,
        limit: int | None = None,
        group: str | None = None,
        passages: bool = False,
        rerank: bool = False,
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
        grouping = Grouping.CONTEXT
        if group is not None:
            try:
                grouping = Grouping(group)
            except ValueError:
                raise ValidationFailed.of(
                    "group", f"must be one of {', '.join(g.value for g in Grouping)}", location="query", type="enum"
                ) from None
        return cls(
            query.strip(), chosen, tuple(dict.fromkeys(wanted)), dict(metadata or {}), size, grouping, passages, rerank
        )

    @property
    def filters(self) -> VectorFilter:
        return VectorFilter(types=self.types, metadata=self.metadata)


@dataclass(frozen=True, slots=True)
class RetrieverRank:
    rank: int  # 1-based, within that retriever's answer
    score: float  # keyword: -bm25 (SQLite) or ts_rank (PostgreSQL); semantic: cosine similarity


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """The ingested document a context belongs to (or is)."""

    source: str
    id: str | None  # the document context's id; None if it is gone (its chunks outlived it)


@dataclass(slots=True)
class SearchHit:
    context: Context
    score: float  # hybrid: the RRF score; one retriever: its own score; per document: the fused score
    retrievers: dict[Retriever, RetrieverRank]
    document: DocumentRef | None = None
    heading_path: list[str] | None = None
    passage: str | None = None  # asked for with ``passages``: the best-matching chunk's text
    matches: int = 1  # per document: how many of its contexts the retrievers found
    rerank_score: float | None = None  # the cross-encoder's logit, when reranked


@dataclass(slots=True)
class RerankReport:
    """What a search that asked for a rerank says about it."""

    applied: bool
    model: str | None
    candidates: int = 0  # how many fused candidates the model reordered
    milliseconds: float = 0.0  # time spent scoring them (the model's load included, on the first query)
    reason: str | None = None  # why it was not applied


@dataclass(slots=True)
class SearchResult:
    query: SearchQuery
    hits: list[SearchHit]
    model: str | None = None  # the embedding model the semantic retriever used
    degraded: list[Retriever] = field(default_factory=list)  # retrievers that could not run
    rerank: RerankReport | None = None  # asked for with ``rerank``


class RetrieverRankOut(BaseModel):
    rank: int = Field(description="1-based position in this retriever's own ranking.")
    score: float = Field(description="keyword: -bm25 (SQLite) or ts_rank (PostgreSQL); semantic: cosine similarity.")


class DocumentRefOut(BaseModel):
    source: str = Field(description="The document's source (the file name it was ingested as).")
    id: str | None = Field(description="The document context's id (null if only its chunks remain).")


class SearchHitOut(BaseModel):
    context: ContextOut
    score: float = Field(
        description="hybrid: reciprocal-rank-fusion score; otherwise the retriever's score; "
        "group=document: the document's fused score."
    )
    retrievers: dict[Retriever, RetrieverRankOut] = Field(description="Which retrievers found it, at what rank.")
    document: DocumentRefOut | None = Field(
        default=None, description="The ingested document this context belongs to (or is); null for other contexts."
    )
    heading_path: list[str] | None = Field(
        default=None, description="For a markdown chunk: the headings above it, outermost first."
    )
    passage: str | None = Field(
        default=None, description="With passages=true: the text of the best-matching chunk (null if none)."
    )
    matches: int = Field(default=1, description="group=document: how many of the document's contexts were found.")
    rerank_score: float | None = Field(
        default=None,
        description="With rerank=true: the cross-encoder's score (a logit, higher is better) of this hit's context; "
        "null for hits beyond the reranked candidates or when reranking was not applied.",
    )


class RerankOut(BaseModel):
    applied: bool = Field(description="Whether the cross-encoder reordered the candidates.")
    model: str | None = Field(description="The cross-encoder (null when reranking is turned off).")
    candidates: int = Field(description="How many of the best fused candidates it scored and reordered.")
    milliseconds: float = Field(description="Time spent scoring them (the model's load included, first time).")
    reason: str | None = Field(default=None, description="Why it was not applied (the search answered without it).")


class SearchOut(BaseModel):
    query: str
    mode: SearchMode
    limit: int
    types: list[str]
    metadata: dict[str, list[Any]]
    model: str | None = Field(description="The embedding model the semantic retriever used.")
    degraded: list[Retriever] = Field(description="Retrievers that could not run (hybrid falls back to the rest).")
    group: Grouping = Field(default=Grouping.CONTEXT, description="context: a hit per context; document: per document.")
    rerank: RerankOut | None = Field(
        default=None, description="With rerank=true: whether the reranker was applied, and if not, why."
    )
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
            group=query.group,
            rerank=None
            if result.rerank is None
            else RerankOut(
                applied=result.rerank.applied,
                model=result.rerank.model,
                candidates=result.rerank.candidates,
                milliseconds=result.rerank.milliseconds,
                reason=result.rerank.reason,
            ),
            items=[
                SearchHitOut(
                    context=ContextOut.of(hit.context),
                    score=hit.score,
                    retrievers={
                        name: RetrieverRankOut(rank=r.rank, score=r.score) for name, r in hit.retrievers.items()
                    },
                    document=None
                    if hit.document is None
                    else DocumentRefOut(source=hit.document.source, id=hit.document.id),
                    heading_path=hit.heading_path,
                    passage=hit.passage,
                    matches=hit.matches,
                    rerank_score=hit.rerank_score,
                )
                for hit in result.hits
            ],
        )
