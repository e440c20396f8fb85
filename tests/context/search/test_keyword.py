"""Keyword retrieval's two tiers (all words, then the rarer words) on real SQLite FTS5 and real
PostgreSQL full text, with the document-frequency estimates each backend really has."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tests.conftest import analyze
from trellis.auth.models import User
from trellis.context.models import Context
from trellis.context.repository import content_hash
from trellis.context.search.keyword import (
    Fts5TermStatistics,
    KeywordRetriever,
    PgTermStatistics,
    match_plan,
)
from trellis.storage import migrate
from trellis.storage.database import Database


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    await migrate.upgrade(db)
    try:
        yield db
    finally:
        await db.dispose()


async def add_user(database: Database) -> str:
    user_id = f"usr_{uuid.uuid4().hex}"
    async with database.transaction() as session:
        session.add(User(id=user_id, username=f"u{uuid.uuid4().hex[:12]}", role="developer", disabled=False))
    return user_id


async def add(database: Database, owner_id: str, contents: dict[str, str], type: str = "note") -> None:
    now = datetime.now(UTC)
    async with database.transaction() as session:
        for key, content in contents.items():
            session.add(
                Context(
                    id=key,
                    owner_id=owner_id,
                    type=type,
                    content=content,
                    meta={},
                    content_hash=content_hash(content),
                    version=1,
                    source=None,
                    created_at=now,
                    updated_at=now,
                )
            )


async def add_alphas_and_betas(database: Database, owner_id: str, alphas: int, betas: int) -> None:
    """Contexts a-0.. with the word 'alpha' and b-0.. with 'beta' (and nothing else in common)."""
    await add(database, owner_id, {f"a-{i}": f"alpha entry {i}" for i in range(alphas)})
    await add(database, owner_id, {f"b-{i}": f"beta entry {i}" for i in range(betas)})


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [context_id for context_id, _ in hits]


def test_match_plan_orders_rarest_first_and_counts_what_fits() -> None:
    frequencies = {"common": 900.0, "rare": 3.0, "middling": 40.0}
    words = ["common", "rare", "middling"]
    assert match_plan(frequencies, words, 50) == (["rare", "middling", "common"], 2)
    assert match_plan(frequencies, words, 10) == (["rare", "middling", "common"], 1)
    # The rarest joins even over the budget; budget 0 means every word at once.
    assert match_plan(frequencies, ["common"], 10) == (["common"], 1)
    assert match_plan(frequencies, ["common", "rare"], 0) == (["rare", "common"], 2)
    # Words no context can match are left out; equal frequencies keep the query's order.
    assert match_plan({"b": 1.0, "a": 1.0}, ["b", "zzyzx", "a"], 5) == (["b", "a"], 2)
    assert match_plan({}, ["zzyzx"], 5) == ([], 0)


async def test_contexts_with_every_word_rank_first(database: Database) -> None:
    owner = await add_user(database)
    await add(
        database,
        owner,
        {
            # 'heron' many times: the highest BM25 for one word, but the other word is missing.
            "one-word": "heron heron heron heron heron heron wading bird",
            "both-words": "a heron standing in the marsh with a lantern nearby and other long text here",
            "other-word": "lantern lantern lantern lantern",
        },
    )
    await analyze(database)
    retriever = KeywordRetriever(database, budget=10_000)
    hits = await retriever.search(owner, ["heron", "lantern"], 10)
    assert ids(hits)[0] == "both-words"
    assert set(ids(hits)) == {"one-word", "both-words", "other-word"}
    # Enough contexts have both words: the first tier is the whole answer.
    assert ids(await retriever.search(owner, ["heron", "lantern"], 1)) == ["both-words"]


async def test_common_words_order_the_candidates_but_do_not_make_them(database: Database) -> None:
    owner = await add_user(database)
    filler = {f"filler-{i}": f"the common word appears here, entry {i}" for i in range(40)}
    await add(database, owner, filler)
    await add(
        database,
        owner,
        {
            # The same length, so only 'common' tells them apart.
            "rare-and-common": "a quokka common",
            "rare-only": "a quokka thing",
            "other-rare": "a wombat thing",
            "other-rare-2": "one wombat thing",
        },
    )
    await analyze(database)
    words = ["quokka", "wombat", "common"]
    # No context has all three. Budget 10 rows: 'common' (41 contexts) only scores; the rare words match.
    pruned = await KeywordRetriever(database, budget=10).search(owner, words, 4)
    assert ids(pruned)[0] == "rare-and-common"
    assert set(ids(pruned)) == {"rare-and-common", "rare-only", "other-rare", "other-rare-2"}
    # Budget 0: the exact OR, every context with any word.
    exact = await KeywordRetriever(database, budget=0).search(owner, words, 100)
    assert len(exact) == 44
    # A budget the common word fits in: the same as the exact OR.
    assert ids(await KeywordRetriever(database, budget=1000).search(owner, words, 100)) == ids(exact)


async def test_only_common_words_still_match_the_rarest(database: Database) -> None:
    owner = await add_user(database)
    await add_alphas_and_betas(database, owner, 30, 20)
    await analyze(database)
    hits = await KeywordRetriever(database, budget=5).search(owner, ["alpha", "beta"], 10)
    # Both words are over the budget: the rarer one ('beta', 20 contexts) matches, and fills 10.
    assert len(hits) == 10
    assert all(context_id.startswith("b-") for context_id in ids(hits))


async def test_too_few_matches_widen_to_the_next_word(database: Database) -> None:
    owner = await add_user(database)
    await add_alphas_and_betas(database, owner, 30, 20)
    await analyze(database)
    retriever = KeywordRetriever(database, budget=5)
    # 'beta' alone finds 20 of the 40 asked for: 'alpha' joins.
    assert len(await retriever.search(owner, ["alpha", "beta"], 40)) == 40
    # A misspelt word no context has (and a PostgreSQL stop word our list lacks) must not leave
    # the common words unmatched: the answer is what the real words find.
    for junk in ("zzyzx", "don"):
        hits = await retriever.search(owner, ["alpha", "beta", junk], 100)
        assert sorted(ids(hits)) == sorted([f"a-{i}" for i in range(30)] + [f"b-{i}" for i in range(20)]), junk


async def test_filters_and_owners_apply_in_both_tiers(database: Database) -> None:
    owner, stranger = await add_user(database), await add_user(database)
    await add(database, owner, {"mine-both": "walrus and puffin", "mine-one": "walrus only"})
    await add(database, owner, {"mine-task": "walrus and puffin task"}, type="task")
    await add(database, stranger, {"theirs-both": "walrus and puffin", "theirs-one": "puffin only"})
    await analyze(database)
    retriever = KeywordRetriever(database, budget=10_000)
    assert ids(await retriever.search(owner, ["walrus", "puffin"], 10, types=["note"])) == ["mine-both", "mine-one"]
    assert set(ids(await retriever.search(owner, ["walrus", "puffin"], 10))) == {"mine-both", "mine-one", "mine-task"}


async def test_document_frequencies_are_estimated_and_cached(database: Database) -> None:
    owner = await add_user(database)
    await add(database, owner, {f"c-{i}": f"ibis {'stork' if i < 3 else ''}" for i in range(25)})
    await analyze(database)
    now = [0.0]
    kind = Fts5TermStatistics if database.dialect == "sqlite" else PgTermStatistics
    statistics = kind(database, ttl=60.0, clock=lambda: now[0])
    first = await statistics.document_frequencies(["ibis", "stork", "absent"], 1000)
    if database.dialect == "sqlite":
        assert first == {"ibis": 25.0, "stork": 3.0}  # no context has "absent": it matches nothing
        capped = await statistics.document_frequencies(["ibis"], 10)
        assert capped == {"ibis": 10.0}
    else:
        # The planner's statistics: frequency x row estimate, close to the truth on a fully sampled table.
        assert first["ibis"] == pytest.approx(25.0, rel=0.05)
        assert first["stork"] == pytest.approx(3.0, rel=0.05)
        assert "absent" not in first  # counted (not in the statistics): no context has it
    # Cached: new rows do not change the estimate until it expires.
    await add(database, owner, {f"d-{i}": "stork" for i in range(10)})
    await analyze(database)
    now[0] = 59.0
    assert (await statistics.document_frequencies(["stork"], 1000))["stork"] == first["stork"]
    # Expired: looked up again.
    now[0] = 61.0
    assert (await statistics.document_frequencies(["stork"], 1000))["stork"] == pytest.approx(13.0, rel=0.05)


class Pool:
    """Candidates another retriever found, recording whether keyword asked for them."""

    def __init__(self, ids: list[str] | None) -> None:
        self.ids = ids
        self.asked = 0

    async def __call__(self) -> list[str] | None:
        self.asked += 1
        return self.ids


async def test_words_too_common_together_rank_only_the_candidates(database: Database) -> None:
    owner = await add_user(database)
    await add(database, owner, {f"both-{i}": f"alpha beta entry {i}" for i in range(30)})
    await add(database, owner, {"alpha-only": "alpha gamma", "beta-only": "beta gamma", "neither": "gamma"})
    await analyze(database)
    retriever = KeywordRetriever(database, budget=10)
    pool = Pool(["alpha-only", "both-3", "neither", "both-7"])
    hits = await retriever.search(owner, ["alpha", "beta"], 10, candidates=pool)
    # 30 contexts have both words, over the budget of 10: only the candidates are ranked, those with
    # both words first (though 'alpha gamma', shorter, scores higher on 'alpha'); a candidate with
    # neither word is no keyword hit.
    assert pool.asked == 1
    assert set(ids(hits)[:2]) == {"both-3", "both-7"}
    assert ids(hits)[2:] == ["alpha-only"]
    # Without candidates (keyword search on its own) the tiers rank every match, as before.
    alone = await retriever.search(owner, ["alpha", "beta"], 100)
    assert len(alone) == 32
    assert set(ids(alone)[:30]) == {f"both-{i}" for i in range(30)}
    # Nothing to narrow to (the other retriever failed or found too few): the same as on its own.
    assert await retriever.search(owner, ["alpha", "beta"], 100, candidates=Pool(None)) == alone


async def test_common_words_rare_together_are_ranked_without_candidates(database: Database) -> None:
    owner = await add_user(database)
    await add_alphas_and_betas(database, owner, 20, 20)
    await add(database, owner, {"both": "alpha beta together"})
    await analyze(database)
    pool = Pool(["a-1", "b-1"])
    hits = await KeywordRetriever(database, budget=10).search(owner, ["alpha", "beta"], 1, candidates=pool)
    # Each word is over the budget, but only one context has both: counted, then ranked as usual.
    assert ids(hits) == ["both"]
    assert pool.asked == 0


async def test_a_common_rarest_word_ranks_the_candidates_after_all_words(database: Database) -> None:
    owner = await add_user(database)
    await add_alphas_and_betas(database, owner, 30, 20)
    await add(database, owner, {"both": "alpha beta together"})
    await analyze(database)
    pool = Pool(["a-4", "b-2", "both"])
    hits = await KeywordRetriever(database, budget=5).search(owner, ["alpha", "beta"], 10, candidates=pool)
    # Tier 1 (both words) first; then the rarest word alone ('beta', 21 contexts) is over the budget of
    # 5, so the candidates with any word follow instead of every context with 'beta'.
    assert ids(hits)[0] == "both"
    assert sorted(ids(hits)[1:]) == ["a-4", "b-2"]
    assert pool.asked == 1


async def test_ranking_from_the_index_first_matches_ranking_with_the_owner_filter(database: Database) -> None:
    owner, stranger = await add_user(database), await add_user(database)
    # Many weak matches of the stranger's (one 'walrus' in a long text) and the owner's strong ones:
    # the owner's best fill the index's first window, which is then the answer. A type filter makes
    # the owner filter run inside the ranking: the answers must be the same.
    filler = " ".join(f"word{i}" for i in range(30))
    await add(database, stranger, {f"theirs-{i:03}": f"walrus {filler} {i}" for i in range(300)})
    await add(database, owner, {f"mine-{i:02}": f"walrus {'tusk ' * (i % 4)}note {i}" for i in range(40)})
    await analyze(database)
    retriever = KeywordRetriever(database, budget=10_000)
    for words in (["walrus", "tusk"], ["walrus"]):
        for depth in (1, 5, 30):
            plain = await retriever.search(owner, words, depth)
            filtered = await retriever.search(owner, words, depth, types=["note"])
            assert plain == filtered, (words, depth)
            assert len(plain) == depth
            assert all(context_id.startswith("mine-") for context_id in ids(plain))
    # (On SQLite the window answered every time: the owner was never sent to the slow path.)
    assert owner not in retriever._scattered


async def test_an_owner_outranked_by_others_still_gets_their_best_matches(database: Database) -> None:
    owner, stranger = await add_user(database), await add_user(database)
    # The stranger's contexts outrank every one of the owner's: the index's first window holds none
    # of the owner's, and the ranking with the owner filter answers (now and on the next query).
    await add(database, stranger, {f"theirs-{i}": "walrus walrus walrus" for i in range(120)})
    await add(database, owner, {f"mine-{i:02}": f"walrus {'tusk ' * (i % 4)}note {i}" for i in range(40)})
    await analyze(database)
    retriever = KeywordRetriever(database, budget=10_000)
    for depth in (5, 5, 30):
        plain = await retriever.search(owner, ["walrus"], depth)
        assert plain == await retriever.search(owner, ["walrus"], depth, types=["note"])
        assert len(plain) == depth
        assert all(context_id.startswith("mine-") for context_id in ids(plain))
