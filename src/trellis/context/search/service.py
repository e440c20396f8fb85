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

    ``semantic``: the query is embedded with the gateway's default embedding model and the vector
    index (``trellis.context.index.exact``) returns the nearest contexts by cosine similarity.

Fusion
    ``hybrid`` runs both concurrently, each to a depth of ``max(2 * limit, 50)`` (at most 200),
    and fuses them by reciprocal rank fusion: ``score = sum over retrievers of 1 / (60 + rank)``.
    When the query's words are too common to rank within the keyword budget, keyword ranks what
    semantic found instead of every match (``trellis.context.search.keyword``). If the embedding model is
    unavailable, hybrid answers with the keyword results alone and says so (``degraded``);
    ``semantic`` fails with the model's error instead.

Query vectors come from ``Gateway.embed``, which caches each text's vector (per user unless the
gateway's cache is shared, in process and in Redis when configured): a repeated query (paging, a
UI searching again, an agent retrying) skips the embedding model, and the episodic log says the
call was answered from the cache.

Filters (``types``: any of; ``metadata``: JSON-typed equality, see ``trellis.storage.metadata_filter``)
apply inside each retriever, in SQL, before ranking. Only the caller's own contexts are searched,
admins included.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence

from trellis.auth.schemas import Principal
from trellis.context.index.base import DimensionMismatch, VectorIndex
from trellis.context.models import Context
from trellis.context.search import repository as repo
from trellis.context.search.keyword import DEFAULT_BUDGET, Candidates, KeywordRetriever
from trellis.context.search.schemas import Retriever, RetrieverRank, SearchHit, SearchMode, SearchQuery, SearchResult
from trellis.episodic.schemas import Door
from trellis.gateway.service import CallContext, Gateway
from trellis.kit.errors import TrellisError
from trellis.kit.logging import get_logger
from trellis.kit.vector_math import FloatArray, as_vector
from trellis.storage.database import Database

log = get_logger(__name__)

RRF_K = 60
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


def fuse(ranked: dict[Retriever, Sequence[tuple[str, float]]], *, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: ids by ``sum 1 / (k + rank)``, best first.

    Exact ties are common (first in one list and second in the other, or the other way round) and
    are broken by each retriever's own order, in the order the lists are given (search gives the
    keyword list first: an exact word match is the more specific evidence), then by id. Random ids
    alone would make such a search answer differently from one store to the next."""
    scores: dict[str, float] = {}
    best: dict[str, int] = {}
    positions: dict[str, list[int]] = {}
    unranked = 1 + max((len(hits) for hits in ranked.values()), default=0)
    for column, hits in enumerate(ranked.values()):
        for rank, (context_id, _) in enumerate(hits, start=1):
            scores[context_id] = scores.get(context_id, 0.0) + 1.0 / (k + rank)
            best[context_id] = min(best.get(context_id, rank), rank)
            positions.setdefault(context_id, [unranked] * len(ranked))[column] = rank
    return sorted(scores.items(), key=lambda item: (-item[1], best[item[0]], positions[item[0]], item[0]))


class ContextSearch:
    def __init__(
        self,
        database: Database,
        gateway: Gateway,
        index: VectorIndex,
        *,
        keyword_budget: int = DEFAULT_BUDGET,
    ) -> None:
        self._database = database
        self._gateway = gateway
        self._index = index
        self._keyword = KeywordRetriever(database, budget=keyword_budget)

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
            order = fuse(ranked)
        else:
            (only,) = ranked.values()
            order = list(only)
        order = order[: query.limit]
        ranks: dict[str, dict[Retriever, RetrieverRank]] = {}
        for name, hits in ranked.items():
            for rank, (context_id, score) in enumerate(hits, start=1):
                ranks.setdefault(context_id, {})[name] = RetrieverRank(rank, score)

        rows = await self.fetch_contexts(owner_id, [context_id for context_id, _ in order])
        result.hits = [
            SearchHit(rows[context_id], score, ranks[context_id]) for context_id, score in order if context_id in rows
        ]
        return result

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
        """The default embedding model's name and the text's vector (the gateway caches it)."""
        model, embedded = await self._gateway.embed(ctx, None, [text])
        return model, as_vector(embedded.vectors[0])

    async def fetch_contexts(self, owner_id: str, ids: Sequence[str]) -> dict[str, Context]:
        if not ids:
            return {}
        async with self._database.reader() as session:
            return await repo.owned_contexts(session, owner_id, ids)
