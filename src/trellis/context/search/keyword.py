"""Keyword retrieval with a bounded cost: all words first, then the rarer words.

Ranking every context that contains *any* query word (BM25 or ``ts_rank`` over one big OR) costs
time in proportion to how many contexts contain the commonest word: at 100,000 contexts a query
with one everyday word ranked 35,000 rows, 45 ms on SQLite and 65 ms on PostgreSQL at p95. Search
engines avoid that with dynamic pruning (WAND, block-max indexes), which neither FTS5 nor GIN
offers. So retrieval runs in two tiers, each a plain full-text query:

1. **All words.** Contexts containing every query word, ranked. Several words together are rare,
   so this set is small; when it fills the depth asked for, it is the answer.
2. **Rarer words.** Otherwise contexts containing any of the query's *rarer* words are appended,
   ranked by all of the query's words (Lucene's "common terms" idea: common words order the
   candidates but do not make them). Words join the matching set rarest first while their document
   frequencies add up to at most ``budget`` (the rarest always joins), so the rows ranked stay near
   ``budget``. A word left out is one that, by its document frequency, would add many rows of low
   weight (its IDF is low). If the matching words find fewer contexts than asked for (a misspelt
   word, a rare identifier), the next rarest word joins and the tier runs again, until every word
   has. With ``budget`` 0, or when every word fits, this tier is the plain OR.

**Too common to rank: the candidates.** Ranking on PostgreSQL reads every matching row (the heap
row, for ``ts_rank`` and the owner: 2-4 µs each even from shared buffers), and some queries have
only common words: at 100,000 contexts "swift deeplink ios" has all three words in 4,189 contexts,
which cost 20 ms to rank. (SQLite ranks from the FTS5 index and reads only the best rows' owners,
``_fts_first``; the same rule applies there, at a lower cost per row.) Such words barely tell
contexts apart, so when another retriever ran alongside (hybrid: the semantic one), a tier whose
matches exceed the budget ranks only that retriever's *candidates* — the contexts it found — by
the words, those with all of them first (re-scoring, as search engines re-rank a window of first-stage hits).
Whether "all words" is over the budget is counted, up to the budget, when every word alone is:
counting needs no column, so FTS5 reads only its index and PostgreSQL's bitmap scan can skip the
heap pages VACUUM marked all-visible (16.2 does; some later minor releases visit them), 1-4 ms at
100,000 contexts. For the rarer-words tier the frequencies decide (the rarest word alone, or the
words widening added, over the budget). Without candidates (keyword search on its own, or none to
offer) the tiers run as described above. The cost of re-scoring: a context without a vector yet
(embedding runs in the background, seconds after a write) is not among the candidates, so it is
missed by common words until it has one; rare words still find it.

Document frequencies come first, from ``TermStatistics``, cached for a minute: a word no context
contains (misspelt, or with no searchable token) is dropped before tier 1, so it cannot empty "all
words". SQLite counts each word's FTS5 doclist, capped well past the budget. PostgreSQL reads the
statistics ANALYZE (autovacuum) keeps for the ``search_vector`` column (``pg_stats.
most_common_elems``, which the planner uses for the same purpose) and counts, through the GIN index,
only the words they do not list: those are rare, so counting them is cheap. A stale estimate only
moves a word between matching and scoring.

Scores: SQLite reports ``-bm25`` of the tier's expression, PostgreSQL ``ts_rank`` against all the
words; the order is by tier, then score. FTS5's ``bm25`` scores only the phrases of its MATCH
expression, so the pruned tier's ``(rare OR ...) AND (every OR ...)`` counts the rare words twice:
in that tier rare words weigh double (an IDF-like boost), and its scores are not on tier 1's scale.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from cachetools import LRUCache, TTLCache
from sqlalchemy import Select, bindparam, column, func, literal_column, select, table, text
from sqlalchemy.sql.elements import ColumnElement

from trellis.context.models import Context
from trellis.storage.database import Database
from trellis.storage.metadata_filter import MetadataFilter, metadata_clause

# Rows a tier aims to rank at most (the context.keyword_rank_budget setting's default): at 2-4 µs a
# row, a few milliseconds.
DEFAULT_BUDGET = 2_000
# Long enough to spare the lookups, short enough to follow a store that grows fast.
STATISTICS_TTL_SECONDS = 60.0
# Before the first ANALYZE there are no statistics: look again soon.
NO_STATISTICS_TTL_SECONDS = 5.0
STATISTICS_MAX_TERMS = 20_000


def fts5_phrase(term: str) -> str:
    """A word as an FTS5 string: quoted, so nothing in it is syntax."""
    return '"' + term.replace('"', '""') + '"'


def fts5_any(terms: Sequence[str]) -> str:
    return " OR ".join(fts5_phrase(term) for term in terms)


def fts5_all(terms: Sequence[str]) -> str:
    return " AND ".join(fts5_phrase(term) for term in terms)


def websearch_any(terms: Sequence[str]) -> str:
    """Text for ``websearch_to_tsquery`` matching any of the words (``or`` itself is syntax there)."""
    return " or ".join(terms)


def websearch_all(terms: Sequence[str]) -> str:
    return " ".join(terms)


def match_plan(frequencies: dict[str, float], terms: Sequence[str], budget: int) -> tuple[list[str], int]:
    """The order in which words join the matching set (rarest first; words missing from
    ``frequencies`` match nothing and are left out), and how many join at once: those whose
    frequencies fit ``budget`` together, at least one, all of them for budget 0."""
    ordered = sorted((t for t in terms if t in frequencies), key=lambda t: (frequencies[t], terms.index(t)))
    if budget <= 0:
        return ordered, len(ordered)
    total = 0.0
    for count, term in enumerate(ordered):
        total += frequencies[term]
        if count and total > budget:
            return ordered, count
    return ordered, len(ordered)


class TermStatistics(Protocol):
    async def document_frequencies(self, terms: Sequence[str], cap: int) -> dict[str, float]:
        """How many contexts (all owners) contain each word, estimated; at least ``cap`` means "many".
        A word no context can match (no such word stored, or no searchable token in it) is absent."""
        ...


class Fts5TermStatistics:
    """Counts each word's FTS5 matches, stopping at ``cap``; cached per word for a few minutes."""

    def __init__(
        self, database: Database, *, ttl: float = STATISTICS_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._database = database
        self._cache: TTLCache[tuple[str, int], float] = TTLCache(STATISTICS_MAX_TERMS, ttl, timer=clock)

    async def document_frequencies(self, terms: Sequence[str], cap: int) -> dict[str, float]:
        known = {term: self._cache.get((term.lower(), cap)) for term in terms}
        missing = [term for term, value in known.items() if value is None]
        if missing:
            statement = text(
                "SELECT count(*) FROM (SELECT 1 FROM contexts_fts WHERE contexts_fts MATCH :match LIMIT :cap)"
            )
            async with self._database.reader() as session:
                for term in missing:
                    count = (await session.execute(statement, {"match": fts5_phrase(term), "cap": cap})).scalar_one()
                    known[term] = float(count)
                    self._cache[(term.lower(), cap)] = float(count)
        return {term: float(value) for term, value in known.items() if value}


class PgTermStatistics:
    """The planner's lexeme frequencies for ``contexts.search_vector`` times the table's row estimate,
    for the words they list; the words they do not list are rare, so counting their matches (capped)
    through the GIN index is cheap, and tells a word no context has from a rare one.

    A word's lexemes come from ``to_tsvector('english', word)`` (cached); a word without any (a stop
    word in PostgreSQL's english configuration) matches nothing. Before the first ANALYZE there are no
    statistics and every word is counted."""

    def __init__(
        self, database: Database, *, ttl: float = STATISTICS_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._database = database
        self._clock = clock
        self._ttl = ttl
        self._lexemes: LRUCache[str, tuple[str, ...]] = LRUCache(STATISTICS_MAX_TERMS)
        self._counts: TTLCache[tuple[str, int], float] = TTLCache(STATISTICS_MAX_TERMS, ttl, timer=clock)
        self._frequencies: dict[str, float] = {}
        self._expires = 0.0

    async def document_frequencies(self, terms: Sequence[str], cap: int) -> dict[str, float]:
        # The hot path asks again and again for words seen a moment ago: no connection then.
        missing = [term.lower() for term in terms if term.lower() not in self._lexemes]
        if missing or self._clock() >= self._expires:
            async with self._database.reader() as session:
                if missing:
                    rows = await session.execute(
                        text(
                            "SELECT word, array(SELECT lexeme FROM unnest(to_tsvector('english', word))) "
                            "FROM unnest(CAST(:words AS text[])) AS word"
                        ),
                        {"words": missing},
                    )
                    for word, lexemes in rows:
                        self._lexemes[str(word)] = tuple(lexemes or ())
                if self._clock() >= self._expires:
                    self._frequencies = await self._load(session)
                    self._expires = self._clock() + (self._ttl if self._frequencies else NO_STATISTICS_TTL_SECONDS)
        estimates: dict[str, float] = {}
        uncounted: list[str] = []
        for term in terms:
            lexemes = self._lexemes.get(term.lower(), ())
            if not lexemes:  # a stop word to PostgreSQL: never matched
                continue
            listed = [self._frequencies[lexeme] for lexeme in lexemes if lexeme in self._frequencies]
            counted = self._counts.get((term.lower(), cap))
            if len(listed) == len(lexemes):
                estimates[term] = max(listed)
            elif counted is None:
                uncounted.append(term)
            elif counted:
                estimates[term] = counted
        if uncounted:
            count = text(
                "SELECT count(*) FROM (SELECT 1 FROM contexts "
                "WHERE search_vector @@ websearch_to_tsquery('english', :word) LIMIT :cap) AS hits"
            )
            async with self._database.reader() as session:
                for term in uncounted:
                    counted = float((await session.execute(count, {"word": term, "cap": cap})).scalar_one())
                    self._counts[(term.lower(), cap)] = counted
                    if counted:
                        estimates[term] = counted
        return estimates

    @staticmethod
    async def _load(session: Any) -> dict[str, float]:
        row = (
            await session.execute(
                text(
                    "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples "
                    "FROM pg_stats s JOIN pg_class c ON c.relname = s.tablename "
                    "AND c.relnamespace = to_regnamespace(s.schemaname) "
                    "WHERE s.schemaname = current_schema() AND s.tablename = 'contexts' "
                    "AND s.attname = 'search_vector'"
                )
            )
        ).one_or_none()
        if row is None or row[0] is None or row[1] is None:
            return {}
        lexemes, freqs, rows = row
        total = max(float(rows), 0.0)
        # zip stops at the lexemes: after their frequencies come the minimum, maximum and null frequency.
        return {str(lexeme): float(freq) * total for lexeme, freq in zip(lexemes, freqs, strict=False)}


# The contexts another retriever found (hybrid: the semantic one), asked for only when the words
# are too common to rank within the budget; None when there are none to offer (it failed).
Candidates = Callable[[], Awaitable[Sequence[str] | None]]


class KeywordRetriever:
    def __init__(
        self,
        database: Database,
        *,
        budget: int,
        statistics: TermStatistics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._budget = budget
        # SQLite: owners whose contexts were too few of the best matches for ``_fts_first`` lately
        # (a small share of a shared store): they skip it for a while rather than rank twice.
        self._scattered: TTLCache[str, bool] = TTLCache(STATISTICS_MAX_TERMS, STATISTICS_TTL_SECONDS, timer=clock)
        self._statistics = statistics or (
            Fts5TermStatistics(database) if database.dialect == "sqlite" else PgTermStatistics(database)
        )

    async def search(
        self,
        owner_id: str,
        terms: Sequence[str],
        depth: int,
        *,
        types: Sequence[str] = (),
        metadata: MetadataFilter | None = None,
        candidates: Candidates | None = None,
    ) -> list[tuple[str, float]]:
        """Ids and scores (higher is better) of the owner's contexts matching the words, best first.

        With ``candidates``, a tier whose words match more contexts than the budget ranks only the
        candidates instead (see the module docstring)."""
        if self._database.dialect != "sqlite":
            terms = [term for term in terms if term.lower() != "or"]  # syntax to websearch_to_tsquery
        if not terms or depth <= 0:
            return []
        filters = (types, metadata or {})
        budget = self._budget
        # Counted well past the budget, so the rarest of several over-budget words is still known.
        frequencies = await self._statistics.document_frequencies(terms, 4 * max(budget, 1) + 1)
        # A word no context has (misspelt, or no searchable token) would empty "all words".
        present = [term for term in terms if term in frequencies]
        if not present:
            return []
        # When every word is common, together they may still be rare ("postgres kubernetes"). Counting
        # the contexts with all of them is cheaper than ranking them.
        if (
            candidates is not None
            and budget > 0
            and min(frequencies[term] for term in present) > budget
            and await self._count(present, budget + 1) > budget
        ):
            pool = await candidates()
            if pool is not None:
                return await self._ranked_within(owner_id, present, depth, filters, pool)
            candidates = None  # nothing to narrow to: the tiers, as keyword search on its own
        hits = await self._ranked(owner_id, present, present, "all", depth, filters)
        if len(hits) >= depth or len(present) == 1:
            return hits
        ordered, count = match_plan(frequencies, present, budget)
        found = {context_id for context_id, _ in hits}
        first = len(hits)
        while True:
            matching = ordered[:count]
            if candidates is not None and budget > 0 and sum(frequencies[term] for term in matching) > budget:
                # Even the rarest word is common (or widening made the set so): rank the candidates.
                pool = await candidates()
                if pool is not None:
                    more = await self._ranked_within(owner_id, present, depth + first, filters, pool)
                    hits[first:] = [hit for hit in more if hit[0] not in found]
                    break
                candidates = None
            more = await self._ranked(owner_id, present, matching, "any", depth + first, filters)
            hits[first:] = [hit for hit in more if hit[0] not in found]
            if len(hits) >= depth or count == len(ordered):
                break
            # The rarer words match too few of the owner's contexts (a rare identifier): widen.
            count += 1
        return hits[:depth]

    async def _ranked_within(
        self,
        owner_id: str,
        terms: Sequence[str],
        depth: int,
        filters: tuple[Sequence[str], MetadataFilter],
        pool: Sequence[str],
    ) -> list[tuple[str, float]]:
        """The candidates with any of the words, those with all of them first (the tiers' order)."""
        if not pool:
            return []
        if self._database.dialect != "sqlite" and len(terms) > 1:
            # PostgreSQL scores both tiers with the same ts_rank: one statement ordered by "has
            # every word", then score, is the two tiers' answer in one round trip.
            return await self._ranked(owner_id, terms, terms, "tiered", depth, filters, within=pool)
        hits = await self._ranked(owner_id, terms, terms, "all", depth, filters, within=pool)
        if len(hits) >= depth or len(terms) == 1:
            return hits
        found = {context_id for context_id, _ in hits}
        more = await self._ranked(owner_id, terms, terms, "any", depth, filters, within=pool)
        return (hits + [hit for hit in more if hit[0] not in found])[:depth]

    async def _count(self, terms: Sequence[str], cap: int) -> int:
        """How many contexts (all owners: those are the rows a ranking would read) have every word,
        counted up to ``cap``, without ranking or reading any column of them."""
        if self._database.dialect == "sqlite":
            statement = text(
                "SELECT count(*) FROM (SELECT 1 FROM contexts_fts WHERE contexts_fts MATCH :match LIMIT :cap)"
            ).bindparams(match=fts5_all(terms), cap=cap)
        else:
            # No column is needed: where PostgreSQL's bitmap scan may skip heap pages the visibility
            # map marks all-visible, it does (3 ms instead of 15 for 6,924 matches on 16.2).
            statement = text(
                "SELECT count(*) FROM (SELECT FROM contexts "
                "WHERE search_vector @@ websearch_to_tsquery('english', :match) LIMIT :cap) AS hits"
            ).bindparams(match=websearch_all(terms), cap=cap)
        async with self._database.reader() as session:
            return int((await session.execute(statement)).scalar_one())

    async def _fts_first(self, owner_id: str, expression: str, depth: int) -> list[tuple[str, float]] | None:
        """SQLite: the owner's best matches taken from FTS5's own ranking of every owner's, or None
        when the owner has too few of them (then the owner filter must run inside the ranking).

        Filtering by owner inside the ranking reads each matching ``contexts`` row (its content
        with it): at 100,000 contexts three quarters of a keyword query's time. FTS5 alone ranks
        from its index, so it ranks first, over a window wider than ``depth``, and only the
        window's rows are read. Exact whenever the window holds ``depth`` of the owner's contexts
        (the owner's best are then the best of the window) or every match; only a tie in score
        across the window's edge is broken by rowid instead of id."""
        window = 2 * depth + 50
        ranked = text(
            "SELECT rowid, bm25(contexts_fts) FROM contexts_fts WHERE contexts_fts MATCH :match "
            "ORDER BY 2, rowid LIMIT :window"
        ).bindparams(match=expression, window=window)
        rowid: ColumnElement[int] = literal_column("contexts.rowid")
        async with self._database.reader() as session:
            top = (await session.execute(ranked)).all()
            if not top:
                return []
            # The owner is checked here: with ``owner_id = ?`` in SQL, SQLite (no ANALYZE statistics)
            # walks the owner's index over all their contexts instead of looking up the rowids.
            rows = await session.execute(
                select(rowid, Context.id, Context.owner_id).where(rowid.in_([row[0] for row in top]))
            )
            ids: dict[int, str] = {row_id: context_id for row_id, context_id, owner in rows if owner == owner_id}
        hits = [(ids[row_id], -float(score)) for row_id, score in top if row_id in ids]
        if len(hits) < depth and len(top) == window:
            return None
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return hits[:depth]

    async def _ranked(
        self,
        owner_id: str,
        terms: Sequence[str],
        matching: Sequence[str],
        tier: Literal["all", "any", "tiered"],
        depth: int,
        filters: tuple[Sequence[str], MetadataFilter],
        *,
        within: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        dialect = self._database.dialect
        statement: Select[Any]
        if dialect == "sqlite":
            if tier == "all":
                expression = fts5_all(terms)
            elif len(matching) == len(terms):
                expression = fts5_any(terms)
            else:
                # bm25() scores only the phrases of the MATCH expression: AND-ing the rare words' OR
                # with all the words' OR matches what the rare words match and scores with every word
                # (the rare ones twice).
                expression = f"({fts5_any(matching)}) AND ({fts5_any(terms)})"
            if not within and not filters[0] and not filters[1] and owner_id not in self._scattered:
                first = await self._fts_first(owner_id, expression, depth)
                if first is not None:
                    return first
                self._scattered[owner_id] = True
            fts = table("contexts_fts", column("rowid"))
            rank: ColumnElement[Any] = literal_column("bm25(contexts_fts)")
            statement = (
                select(Context.id, rank)
                .select_from(Context)
                .join(fts, fts.c.rowid == literal_column("contexts.rowid"))
                .where(text("contexts_fts MATCH :match").bindparams(bindparam("match", expression)))
                .order_by(rank, Context.id)
            )
            flip = -1.0  # bm25: lower is better
        else:
            english: ColumnElement[Any] = literal_column("'english'::regconfig")
            scoring = func.websearch_to_tsquery(english, bindparam("scoring", websearch_any(terms)))
            words = websearch_all(terms) if tier == "all" else websearch_any(matching)
            matches = func.websearch_to_tsquery(english, bindparam("matching", words))
            vector: ColumnElement[Any] = literal_column("contexts.search_vector")
            rank = func.ts_rank(vector, scoring)
            statement = select(Context.id, rank).where(vector.op("@@")(matches))
            if tier == "tiered":  # contexts with every word first
                every = func.websearch_to_tsquery(english, bindparam("every", websearch_all(terms)))
                statement = statement.order_by(vector.op("@@")(every).desc())
            statement = statement.order_by(rank.desc(), Context.id)
            flip = 1.0
        types, metadata = filters
        statement = statement.where(Context.owner_id == owner_id).limit(depth)
        if within and dialect == "sqlite":
            # By rowid, which the full-text match yields: ``id IN (...)`` read every matching row.
            rowids: Select[Any] = (
                select(literal_column("rowid")).select_from(Context).where(Context.id.in_(list(within)))
            )
            statement = statement.where(literal_column("contexts.rowid").in_(rowids))
        elif within:
            statement = statement.where(Context.id.in_(list(within)))
        if types:
            statement = statement.where(Context.type.in_(list(types)))
        clause = metadata_clause(dialect, Context.meta, metadata)
        if clause is not None:
            statement = statement.where(clause)
        async with self._database.reader() as session:
            rows = (await session.execute(statement)).all()
        return [(context_id, flip * float(score)) for context_id, score in rows]
