"""Search over a user's contexts: keyword, semantic, or both fused (hybrid, the default).

Retrievers
    ``keyword``: full-text. SQLite: the FTS5 table ``contexts_fts`` (porter stemming, unicode61),
    ranked by ``bm25``. PostgreSQL: the generated ``search_vector`` (english) with its GIN index,
    ranked by ``ts_rank``. The user's text is never handed to a query parser as syntax: it is cut
    into words (``\\w+``), each word becomes a quoted FTS5 string (or a plain word for
    ``websearch_to_tsquery``, which never raises). English stop words are dropped first (on both
    backends). So ``foo AND (``, stray quotes, ``NEAR``, ``*`` or ``-`` are just words or nothing,
    never a syntax error. Contexts with all the words rank first, then contexts with the query's
    rarer words, ranked by all of them: ``trellis.context.search.keyword`` explains how that bounds the
    cost at any corpus size.

    ``semantic``: the query is embedded with the *active* embedding model
    (``trellis.context.index.state``) and the vector index returns the nearest contexts among that
    model's vectors, by cosine similarity. The active model comes from the database, cached in
    process under an epoch that the reindex moves (``trellis.context.index.state``): while a
    reindex to another model runs, searches keep using the old model and its vectors, and they
    switch when it completes; a ranking never holds two models' vectors.

Fusion
    ``hybrid`` runs both concurrently, each to a depth of ``max(2 * limit, 50)`` (at most 200),
    and fuses them by reciprocal rank fusion: ``score = sum over retrievers of weight / (k + rank)``
    (k 20, keyword weight 1.5, semantic 1.0 by default: ``[context] search_rrf_k`` and the weights).
    When the query's words are too common to rank within the keyword budget, keyword ranks what
    semantic found instead of every match (``trellis.context.search.keyword``). If the embedding model is
    unavailable, hybrid answers with the keyword results alone and says so (``degraded``);
    ``semantic`` fails with the model's error instead.

Query vectors come from ``Gateway.embed``, which caches each text's vector (per user unless the
gateway's cache is shared, in process and in Redis when configured): a repeated query (paging, a
UI searching again, an agent retrying) skips the embedding model, and the episodic log says the
call was answered from the cache.

Reranking (``rerank``, opt-in per query): after fusion, a cross-encoder scores the query against each
of the best ``[context] rerank_depth`` candidates (20) and they are reordered by
``rerank_fused_weight / (k + fused rank) + 1 / (k + the cross-encoder's rank)`` (weight 1.0: its
ranking and the fused one count alike; 0: the cross-encoder's alone), the rest following in their
fused order (``blend_rerank``; depth and weight chosen on the dev split of
``bench/retrieval_quality.py``). Each reranked hit carries ``rerank_score`` (the model's logit);
``score`` stays the fused score. Per document, documents are then fused from the reranked order (by
rank, ``1 / (k + rank)``).
It costs one model run per candidate (``trellis.context.search.rerank``: tens of milliseconds each on
a CPU). A reranker that cannot load does not fail the search: the fused order is answered and
``rerank`` says why it was not applied.

Filters (``types``: any of; ``metadata``: JSON-typed equality, see ``trellis.storage.metadata_filter``)
apply inside each retriever, in SQL, before ranking. Only the caller's own contexts are searched,
admins included.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence

from trellis.auth.schemas import Principal
from trellis.context.index.base import DimensionMismatch, VectorIndex
from trellis.context.index.repository import embedding_text
from trellis.context.index.state import EmbeddingModels
from trellis.context.models import Context
from trellis.context.search import repository as repo
from trellis.context.search.keyword import DEFAULT_BUDGET, Candidates, KeywordRetriever
from trellis.context.search.rerank import DEFAULT_DEPTH, DEFAULT_FUSED_WEIGHT, CrossEncoder, RerankerUnavailable
from trellis.context.search.schemas import (
    DocumentRef,
    Grouping,
    RerankReport,
    Retriever,
    RetrieverRank,
    SearchHit,
    SearchMode,
    SearchQuery,
    SearchResult,
)
from trellis.episodic.schemas import Door
from trellis.gateway.service import CallContext, Gateway
from trellis.kit.errors import TrellisError
from trellis.kit.logging import get_logger
from trellis.kit.vector_math import FloatArray, as_vector
from trellis.storage.database import Database

log = get_logger(__name__)

# Chosen on the dev split of bench/retrieval_quality.py (bench/README.md): a smaller k than the
# customary 60 lets a first place count for more, and an exact word match weighs 1.5 times a
# neighbour in meaning.
RRF_K = 20
KEYWORD_WEIGHT = 1.5
# Document-level fusion: a document's score is its best three contexts' scores, each next one
# weighing ``DOCUMENT_DECAY`` times the one before.
DOCUMENT_DECAY = 0.5
DOCUMENT_TOP = 3
MAX_TERMS = 32
HYBRID_MIN_DEPTH = 50
HYBRID_MAX_DEPTH = 200
_WORD = re.compile(r"\w+")


# English stop words (Snowball's list, as PostgreSQL's 'english' configuration drops them): ORed into
# a keyword query they would match nearly every context and drown the words that matter.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other ought our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves""".split()  # noqa: SIM905 - a word list reads better as text
)


def query_terms(query: str) -> list[str]:
    """The words of a query, deduplicated (case-insensitively), without stop words unless that would
    leave none, at most ``MAX_TERMS``."""
    seen: dict[str, str] = {}
    for word in _WORD.findall(query):
        if any(ch.isalnum() for ch in word):  # '_' alone is no word to either full-text engine
            seen.setdefault(word.lower(), word)
    words = [word for lower, word in seen.items() if lower not in STOP_WORDS] or list(seen.values())
    return words[:MAX_TERMS]


def fuse(
    ranked: dict[Retriever, Sequence[tuple[str, float]]],
    *,
    k: int = RRF_K,
    weights: dict[Retriever, float] | None = None,
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: ids by ``sum over retrievers of weight / (k + rank)``, best first
    (``weights`` default to 1 each).

    Exact ties are common (first in one list and second in the other, or the other way round) and
    are broken by each retriever's own order, in the order the lists are given (search gives the
    keyword list first: an exact word match is the more specific evidence), then by id. Random ids
    alone would make such a search answer differently from one store to the next."""
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    positions: dict[str, list[int]] = {}
    unranked = 1 + max((len(hits) for hits in ranked.values()), default=0)
    for column, (name, hits) in enumerate(ranked.items()):
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, (context_id, _) in enumerate(hits, start=1):
            scores[context_id] = scores.get(context_id, 0.0) + weight / (k + rank)
            best[context_id] = min(best.get(context_id, rank), rank)
            positions.setdefault(context_id, [unranked] * len(ranked))[column] = rank
    return sorted(scores.items(), key=lambda item: (-item[1], best[item[0]], positions[item[0]], item[0]))


def blend_rerank(head: Sequence[str], scores: dict[str, float], *, fused_weight: float, k: int = RRF_K) -> list[str]:
    """``head`` (candidate ids in fused order, each with a cross-encoder score in ``scores``) ordered by
    ``fused_weight / (k + fused rank) + 1 / (k + rank by score)``, ties by fused rank."""
    fused_rank = {context_id: rank for rank, context_id in enumerate(head, start=1)}
    by_model = sorted(head, key=lambda context_id: (-scores[context_id], fused_rank[context_id]))
    model_rank = {context_id: rank for rank, context_id in enumerate(by_model, start=1)}
    return sorted(
        head,
        key=lambda c: (-(fused_weight / (k + fused_rank[c]) + 1.0 / (k + model_rank[c])), fused_rank[c]),
    )


def fuse_documents(
    order: Sequence[tuple[str, float]], keys: dict[str, str], *, decay: float = DOCUMENT_DECAY
) -> list[tuple[str, list[str], float]]:
    """Document-level fusion: contexts grouped by ``keys`` (context id -> document key; a context
    without one is its own document), each document scored ``s1 + decay * s2 + decay**2 * s3`` over
    its best three contexts' scores, so several good chunks lift a document above one that has a
    single, slightly better chunk. Returns (key, its context ids best first, score), best first;
    ties keep the order of each document's best context."""
    members: dict[str, list[tuple[str, float]]] = {}
    for context_id, score in order:
        members.setdefault(keys.get(context_id, context_id), []).append((context_id, score))
    scored = [
        (key, [cid for cid, _ in hits], sum(score * decay**i for i, (_, score) in enumerate(hits[:DOCUMENT_TOP])))
        for key, hits in members.items()
    ]
    position = {key: i for i, key in enumerate(members)}
    return sorted(scored, key=lambda item: (-item[2], position[item[0]]))


class ContextSearch:
    def __init__(
        self,
        database: Database,
        gateway: Gateway,
        index: VectorIndex,
        *,
        keyword_budget: int = DEFAULT_BUDGET,
        rrf_k: int = RRF_K,
        keyword_weight: float = KEYWORD_WEIGHT,
        semantic_weight: float = 1.0,
        document_decay: float = DOCUMENT_DECAY,
        models: EmbeddingModels | None = None,
        reranker: CrossEncoder | None = None,
        rerank_depth: int = DEFAULT_DEPTH,
        rerank_fused_weight: float = DEFAULT_FUSED_WEIGHT,
    ) -> None:
        self._database = database
        self._models = models or EmbeddingModels(database, gateway)
        self._gateway = gateway
        self._index = index
        self._keyword = KeywordRetriever(database, budget=keyword_budget)
        self._rrf_k = rrf_k
        self._weights: dict[Retriever, float] = {"keyword": keyword_weight, "semantic": semantic_weight}
        self._document_decay = document_decay
        self._reranker = reranker
        self._rerank_depth = rerank_depth
        self._rerank_fused_weight = rerank_fused_weight

    @property
    def reranker(self) -> CrossEncoder | None:
        """The cross-encoder ``rerank`` uses (None: turned off)."""
        return self._reranker

    async def search(
        self, principal: Principal, query: SearchQuery, *, door: Door = "rest", request_id: str | None = None
    ) -> SearchResult:
        owner_id = principal.user_id
        depth = query.limit
        if query.mode is SearchMode.HYBRID:
            depth = min(max(2 * query.limit, HYBRID_MIN_DEPTH), HYBRID_MAX_DEPTH)
        ranked: dict[Retriever, Sequence[tuple[str, float]]] = {}
        result = SearchResult(query, [])
        ctx = CallContext(principal=principal, door=door, request_id=request_id)
        keyword: asyncio.Task[list[tuple[str, float]]] | None = None
        # Hybrid: what the semantic retriever found, for keyword to rank when its words are too common
        # to rank them all (trellis.context.search.keyword); None when semantic failed or found too few.
        found: asyncio.Future[Sequence[str] | None] = asyncio.get_running_loop().create_future()

        async def candidates() -> Sequence[str] | None:
            return await asyncio.shield(found)

        if query.mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            # Started first, so its SQL runs while the query is embedded and the vectors scored.
            pool = candidates if query.mode is SearchMode.HYBRID else None
            keyword = asyncio.ensure_future(self.keyword(owner_id, query, depth, candidates=pool))
        try:
            if query.mode in (SearchMode.SEMANTIC, SearchMode.HYBRID):
                try:
                    result.model, semantic = await self.semantic(ctx, query, depth)
                except (TrellisError, DimensionMismatch) as exc:
                    if query.mode is SearchMode.SEMANTIC:
                        raise
                    log.warning("semantic_search_unavailable", error=str(exc))
                    result.degraded.append("semantic")
                else:
                    ranked["semantic"] = semantic
                    # Fewer hits than asked for: the owner's vectors do not cover the store (it is
                    # small, or vectors are still being computed), so they are no stand-in for it.
                    if len(semantic) >= depth:
                        found.set_result([context_id for context_id, _ in semantic])
            if not found.done():
                found.set_result(None)
            if keyword is not None:
                ranked = {"keyword": await keyword, **ranked}
        finally:
            if not found.done():
                found.set_result(None)
            if keyword is not None and not keyword.done():
                keyword.cancel()
                # Something else failed (or this search was cancelled): that is what propagates.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await keyword
            elif keyword is not None and not keyword.cancelled():
                keyword.exception()  # retrieved: an error raised here already wins over it

        if query.mode is SearchMode.HYBRID:
            order = fuse(ranked, k=self._rrf_k, weights=self._weights)
        else:
            (only,) = ranked.values()
            order = list(only)
        rerank_scores: dict[str, float] = {}
        if query.rerank:
            order, rerank_scores, result.rerank = await self._rerank(owner_id, query.text, order)
        ranks: dict[str, dict[Retriever, RetrieverRank]] = {}
        for name, hits in ranked.items():
            for rank, (context_id, score) in enumerate(hits, start=1):
                ranks.setdefault(context_id, {})[name] = RetrieverRank(rank, score)

        labels: dict[str, repo.Label] = {}
        if query.group is Grouping.DOCUMENT or query.passages:
            async with self._database.reader() as session:
                labels = await repo.labels(session, owner_id, [context_id for context_id, _ in order])
        if query.group is Grouping.DOCUMENT:
            reranked = rerank_scores if result.rerank is not None and result.rerank.applied else None
            result.hits = await self._per_document(owner_id, ranked, order, ranks, labels, query.limit, reranked)
        else:
            page = order[: query.limit]
            rows = await self.fetch_contexts(owner_id, [context_id for context_id, _ in page])
            result.hits = [
                SearchHit(rows[cid], score, ranks[cid], rerank_score=rerank_scores.get(cid))
                for cid, score in page
                if cid in rows
            ]
        await self._explain(result.hits, order, labels, passages=query.passages)
        return result

    async def _per_document(
        self,
        owner_id: str,
        ranked: dict[Retriever, Sequence[tuple[str, float]]],
        order: Sequence[tuple[str, float]],
        ranks: dict[str, dict[Retriever, RetrieverRank]],
        labels: dict[str, repo.Label],
        limit: int,
        reranked: dict[str, float] | None = None,
    ) -> list[SearchHit]:
        """One hit per document: its contexts' fused scores (rank-based, so one retriever's raw scores
        and hybrid's RRF are on the same footing) combined by ``fuse_documents``; the hit shows the
        document's best context. Reranked (``reranked``: the cross-encoder's scores), the contexts'
        scores come from their rank in the reranked order instead."""
        if reranked is not None:
            fused: Sequence[tuple[str, float]] = [
                (context_id, 1.0 / (self._rrf_k + rank)) for rank, (context_id, _) in enumerate(order, start=1)
            ]
        else:
            fused = order if len(ranked) > 1 else fuse(ranked, k=self._rrf_k)
        keys = {context_id: label.source for context_id, label in labels.items() if label.source is not None}
        documents = fuse_documents(fused, keys, decay=self._document_decay)[:limit]
        rows = await self.fetch_contexts(owner_id, [members[0] for _, members, _ in documents])
        hits: list[SearchHit] = []
        for _, members, score in documents:
            best = members[0]
            if best in rows:
                rerank_score = None if reranked is None else reranked.get(best)
                hits.append(SearchHit(rows[best], score, ranks[best], matches=len(members), rerank_score=rerank_score))
        return hits

    async def _rerank(
        self, owner_id: str, text: str, order: Sequence[tuple[str, float]]
    ) -> tuple[list[tuple[str, float]], dict[str, float], RerankReport]:
        """The fused order with its best ``rerank_depth`` candidates reordered by ``blend_rerank``, their
        cross-encoder scores, and what to report; the fused order unchanged, and why, when
        the reranker is off or cannot run."""
        if self._reranker is None:
            reason = "reranking is turned off ([context] rerank_enabled = false)"
            return list(order), {}, RerankReport(False, None, reason=reason)
        started = time.perf_counter()
        head = list(order[: self._rerank_depth])
        rows = await self.fetch_contexts(owner_id, [context_id for context_id, _ in head])
        present = [(context_id, score) for context_id, score in head if context_id in rows]
        passages = [embedding_text(rows[cid].content, rows[cid].source, rows[cid].meta) for cid, _ in present]
        try:
            scores = await self._reranker.scores(text, passages)
        except RerankerUnavailable as exc:
            log.warning("rerank_unavailable", error=str(exc))
            return list(order), {}, RerankReport(False, self._reranker.model, reason=str(exc))
        by_id = {context_id: score for (context_id, _), score in zip(present, scores, strict=True)}
        fused = dict(present)
        ids = blend_rerank([cid for cid, _ in present], by_id, fused_weight=self._rerank_fused_weight, k=self._rrf_k)
        rest = list(order[len(head) :]) + [pair for pair in head if pair[0] not in rows]
        report = RerankReport(
            True,
            self._reranker.model,
            candidates=len(present),
            milliseconds=round((time.perf_counter() - started) * 1000, 1),
        )
        return [(cid, fused[cid]) for cid in ids] + rest, by_id, report

    async def _explain(
        self,
        hits: Sequence[SearchHit],
        order: Sequence[tuple[str, float]],
        labels: dict[str, repo.Label],
        *,
        passages: bool,
    ) -> None:
        """Fill in each hit's document, heading path and (asked for) passage."""
        ingested = [hit for hit in hits if hit.context.source is not None]
        parents: dict[str, str] = {}
        if ingested:
            async with self._database.reader() as session:
                parents = await repo.documents_of(session, [hit.context.id for hit in ingested])
        for hit in hits:
            meta = hit.context.meta or {}
            path = meta.get("heading_path")
            hit.heading_path = [str(part) for part in path] if isinstance(path, list) else None
            if hit.context.source is None:
                continue
            is_document = hit.context.id not in parents
            document_id = hit.context.id if is_document else parents[hit.context.id]
            hit.document = DocumentRef(hit.context.source, document_id)
            if not passages:
                continue
            if not is_document:
                hit.passage = hit.context.content
                continue
            # The whole document was hit: its best chunk among the candidates is the passage.
            for context_id, _ in order:
                label = labels.get(context_id)
                if (
                    context_id != hit.context.id
                    and label is not None
                    and label.source == hit.context.source
                    and "sha256" not in label.meta
                ):
                    hit.passage = await self._content(hit.context.owner_id, context_id)
                    break

    async def _content(self, owner_id: str, context_id: str) -> str | None:
        rows = await self.fetch_contexts(owner_id, [context_id])
        return rows[context_id].content if context_id in rows else None

    # --- retrievers ---------------------------------------------------------------------------

    async def keyword(
        self, owner_id: str, query: SearchQuery, depth: int, *, candidates: Candidates | None = None
    ) -> list[tuple[str, float]]:
        """Ids and scores (higher is better) of the owner's contexts matching the query's words."""
        terms = query_terms(query.text)
        return await self._keyword.search(
            owner_id, terms, depth, types=query.types, metadata=query.metadata, candidates=candidates
        )

    async def semantic(self, ctx: CallContext, query: SearchQuery, depth: int) -> tuple[str, list[tuple[str, float]]]:
        """The embedding model used, and ids with cosine similarity of the owner's nearest contexts."""
        model, vector = await self._query_vector(ctx, query.text)
        hits = await self._index.search(ctx.principal.user_id, model, vector, depth, query.filters)
        return model, [(hit.context_id, hit.score) for hit in hits]

    async def _query_vector(self, ctx: CallContext, text: str) -> tuple[str, FloatArray]:
        """The active embedding model's name and the text's vector (the gateway caches it)."""
        model, embedded = await self._gateway.embed(ctx, await self._models.active(), [text], query=True)
        return model, as_vector(embedded.vectors[0])

    async def fetch_contexts(self, owner_id: str, ids: Sequence[str]) -> dict[str, Context]:
        if not ids:
            return {}
        async with self._database.reader() as session:
            return await repo.owned_contexts(session, owner_id, ids)
