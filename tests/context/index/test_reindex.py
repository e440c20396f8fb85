"""Changing the embedding model: ``POST/GET /api/context/reindex`` and the ``Reindexer``.

Two embedding models served by a fake OpenAI-compatible upstream over real HTTP (``old``: 8
dimensions, ``new``: 12), each computing a vector from (model, text) alone, so a test can compute
the exact score a ranking must give if it used one model's vectors throughout. Runs on SQLite and
PostgreSQL. The harness's own background reindexer is stopped where a test drives the work batch by
batch (``work(max_batches=...)``); a batch stopped that way keeps its lease, as a killed process does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, func, select

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import ADMIN_KEY, Harness
from tests.gateway.upstream import FakeUpstream
from trellis.auth.cache import PostgresAuthEpoch
from trellis.context.index.models import ContextEmbedding
from trellis.context.index.reindex import Reindexer
from trellis.runtime import build_runtime
from trellis.settings import Settings

API = "/api/context"
REINDEX = f"{API}/reindex"
ADMIN = Harness.auth(ADMIN_KEY)
DIMENSIONS = {"old-embed": 8, "new-embed": 12}
BATCH = 3


def vector(model_id: str, text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(f"{model_id}|{text}".encode()).digest()[:8], "little")
    return [float(x) for x in np.random.default_rng(seed).standard_normal(DIMENSIONS.get(model_id, 4))]


def cosine(model_id: str, a: str, b: str) -> float:
    x, y = np.asarray(vector(model_id, a)), np.asarray(vector(model_id, b))
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("old-embed", "new-embed")).start()
    server.embedder = vector
    yield server
    server.stop()


def embedder(upstream: FakeUpstream, model_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": upstream.base_url,
        "model_id": model_id,
        "api_key": "sk-test",
        "capabilities": ["embed"],
        "context_window": 4096,
        "max_output_tokens": 1,
        "default_max_tokens": 1,
        **extra,
    }


async def no_wait(_: float) -> None:
    return None


def settings(upstream: FakeUpstream, database_url: str) -> dict[str, Any]:
    """The harness's settings (a second runtime on its database is made with them too)."""
    models = {
        "old": embedder(upstream, "old-embed"),
        "new": embedder(upstream, "new-embed", aliases=["new-alias"]),
        # Configured, able to embed on paper, but nothing answers at its address.
        "broken": {**embedder(upstream, "old-embed"), "base_url": "http://127.0.0.1:9/v1"},
    }
    return {"database_url": database_url, "models": models, "gateway": {"default_embed_model": "old"}}


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str, upstream: FakeUpstream) -> AsyncIterator[Harness]:
    upstream.reset()
    async with make_harness(sleep=no_wait, **settings(upstream, database_url)) as harness:
        harness.runtime.reindexer.batch_size = BATCH
        yield harness


@pytest.fixture
async def alice(h: Harness) -> dict[str, str]:
    _, key = await h.user_with_key("alice")
    return h.auth(key)


TOPICS = ["ships", "rivers", "bread", "stars", "glass", "wool", "maps", "bells", "salt", "ink"]
TEXTS = [f"Note {i}: {topic}" for i, topic in enumerate(TOPICS)]


async def load(h: Harness, who: dict[str, str], texts: list[str] = TEXTS) -> dict[str, str]:
    """Creates the contexts (embedded with the active model on write); returns id -> content."""
    made = {}
    for text in texts:
        data = assert_ok(await h.client.post(API, json={"type": "note", "content": text}, headers=who), 201)
        made[data["id"]] = text
    return made


async def vectors(h: Harness) -> dict[str, set[str]]:
    """model -> ids of the contexts having a vector of it."""
    async with h.runtime.database.session() as session:
        rows = (await session.execute(select(ContextEmbedding.model, ContextEmbedding.context_id))).all()
    found: dict[str, set[str]] = {}
    for model, context_id in rows:
        found.setdefault(model, set()).add(context_id)
    return found


def embedded_texts(upstream: FakeUpstream, model_id: str) -> list[str]:
    """Every context the upstream was asked to embed with ``model_id`` (not the start's probe, nor
    search queries: every context's content starts with "Note ")."""
    texts: list[str] = []
    for call in upstream.calls("embeddings"):
        if call.body.get("model") == model_id:
            given = call.body.get("input")
            texts.extend([given] if isinstance(given, str) else list(given or []))
    return [text for text in texts if text.startswith("Note ")]


async def semantic(h: Harness, who: dict[str, str], query: str) -> dict[str, Any]:
    params = {"query": query, "mode": "semantic", "limit": 50}
    data: dict[str, Any] = assert_ok(await h.client.get(f"{API}/search", params=params, headers=who))
    return data


def assert_scored_by(data: dict[str, Any], model_id: str, query: str, made: dict[str, str]) -> None:
    """Every context is found, each scored exactly as ``model_id``'s vectors score it."""
    assert {hit["context"]["id"] for hit in data["items"]} == set(made)
    for hit in data["items"]:
        expected = cosine(model_id, query, made[hit["context"]["id"]])
        assert hit["score"] == pytest.approx(expected, abs=1e-5), (model_id, hit["context"]["content"])


async def status(h: Harness) -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(await h.client.get(REINDEX, headers=ADMIN))
    return data


# --- the switch ---------------------------------------------------------------------------------


async def test_searches_use_the_old_model_until_the_new_one_is_complete(
    h: Harness, alice: dict[str, str], upstream: FakeUpstream
) -> None:
    await h.runtime.reindexer.stop()  # this test works the reindex batch by batch
    made = await load(h, alice)
    query = "a question about boats"
    before = await semantic(h, alice, query)
    assert before["model"] == "old"
    assert_scored_by(before, "old-embed", query, made)
    assert (await status(h))["active_model"] == "old"

    started = assert_ok(await h.client.post(REINDEX, json={"model": "new-alias"}, headers=ADMIN), 202)
    assert started["status"] == "running"
    assert (started["active_model"], started["target_model"], started["previous_model"]) == ("old", "new", "old")
    assert (started["done"], started["total"]) == (0, len(TEXTS))

    await h.runtime.reindexer.work(max_batches=1)
    half = await status(h)
    assert (half["status"], half["done"], half["total"]) == ("running", BATCH, len(TEXTS))
    assert 0 < half["progress"] < 1
    assert len((await vectors(h))["new"]) == BATCH
    # Half done: searches still embed the query with the old model and rank only its vectors, all of them.
    during = await semantic(h, alice, query)
    assert during["model"] == "old"
    assert_scored_by(during, "old-embed", query, made)
    hybrid = assert_ok(await h.client.get(f"{API}/search", params={"query": query, "limit": 50}, headers=alice))
    assert hybrid["model"] == "old"
    assert hybrid["degraded"] == []

    # A context written meanwhile gets vectors of both models: the switch finds it done.
    made.update(await load(h, alice, ["Note 10: lanterns"]))
    newest = next(iter(set(made) - {hit["context"]["id"] for hit in before["items"]}))
    stored = await vectors(h)
    assert newest in stored["old"]
    assert newest in stored["new"]

    await h.runtime.reindexer.work()
    done = await status(h)
    assert (done["status"], done["active_model"], done["done"], done["total"]) == ("done", "new", 11, 11)
    assert done["progress"] == 1
    assert done["worker"] is None
    # Switched: the new model for the query and the new vectors only; the old ones are gone.
    after = await semantic(h, alice, query)
    assert after["model"] == "new"
    assert_scored_by(after, "new-embed", query, made)
    assert set(await vectors(h)) == {"new"}
    # Every context was embedded once with the new model: none twice, the probe aside.
    assert sorted(embedded_texts(upstream, "new-embed")) == sorted(made.values())
    # New writes now get the new model only.
    made.update(await load(h, alice, ["Note 11: kites"]))
    assert set(await vectors(h)) == {"new"}


async def test_the_servers_background_task_works_a_reindex(h: Harness, alice: dict[str, str]) -> None:
    made = await load(h, alice)
    assert_ok(await h.client.post(REINDEX, json={"model": "new"}, headers=ADMIN), 202)
    await h.runtime.reindexer.wait_idle()
    done = await status(h)
    assert (done["status"], done["active_model"], done["done"]) == ("done", "new", len(TEXTS))
    assert_scored_by(await semantic(h, alice, "stars"), "new-embed", "stars", made)


async def test_a_killed_reindex_resumes_without_redoing_done_batches(
    h: Harness, alice: dict[str, str], upstream: FakeUpstream
) -> None:
    """The process working a reindex dies after two batches (its lease is left behind, unreleased).
    Another process cannot take the job while the lease runs; once it has expired it resumes from the
    stored cursor, and no context is embedded twice. Searches never see the new model until the end."""
    runtime = h.runtime
    await runtime.reindexer.stop()
    made = await load(h, alice)
    assert_ok(await h.client.post(REINDEX, json={"model": "new"}, headers=ADMIN), 202)
    await runtime.reindexer.work(max_batches=2)  # ... and then the process is gone
    killed = await status(h)
    assert (killed["status"], killed["done"], killed["worker"]) == ("running", 2 * BATCH, runtime.reindexer.worker_id)
    assert len(embedded_texts(upstream, "new-embed")) == 2 * BATCH

    other = Reindexer(runtime.database, runtime.gateway, runtime.indexer, runtime.clock, batch_size=BATCH)
    assert not await other.work()  # the dead process's lease still runs
    assert (await status(h))["done"] == 2 * BATCH
    assert_scored_by(await semantic(h, alice, "salt"), "old-embed", "salt", made)

    h.clock.advance(runtime.reindexer.lease_seconds + 1)
    assert await other.work()
    done = await status(h)
    assert (done["status"], done["active_model"], done["done"]) == ("done", "new", len(TEXTS))
    assert sorted(embedded_texts(upstream, "new-embed")) == sorted(made.values())  # each once
    assert_scored_by(await semantic(h, alice, "salt"), "new-embed", "salt", made)


async def test_a_stopped_server_gives_its_lease_back(h: Harness, alice: dict[str, str]) -> None:
    await h.runtime.reindexer.stop()
    await load(h, alice)
    assert_ok(await h.client.post(REINDEX, json={"model": "new"}, headers=ADMIN), 202)
    await h.runtime.reindexer.work(max_batches=1)
    await h.runtime.reindexer.release()  # what stop() does after cancelling its task
    runtime = h.runtime
    other = Reindexer(runtime.database, runtime.gateway, runtime.indexer, runtime.clock, batch_size=BATCH)
    assert await other.work()  # at once: no lease to wait out
    assert (await status(h))["status"] == "done"


async def test_a_reindex_to_the_active_model_fills_gaps_and_keeps_it(h: Harness, alice: dict[str, str]) -> None:
    await h.runtime.reindexer.stop()
    made = await load(h, alice)
    async with h.runtime.database.transaction() as session:
        await session.execute(
            ContextEmbedding.__table__.delete().where(ContextEmbedding.context_id == next(iter(made)))
        )
    started = assert_ok(await h.client.post(REINDEX, headers=ADMIN), 202)  # no body: the configured model
    assert started["target_model"] == "old"
    await h.runtime.reindexer.work()
    assert (await status(h))[("status")] == "done"
    assert (await vectors(h))["old"] == set(made)
    assert_scored_by(await semantic(h, alice, "maps"), "old-embed", "maps", made)


async def test_a_failing_model_fails_the_job_and_a_new_start_resumes(
    h: Harness, alice: dict[str, str], upstream: FakeUpstream
) -> None:
    from tests.gateway.upstream import Status

    await h.runtime.reindexer.stop()
    made = await load(h, alice)
    assert_ok(await h.client.post(REINDEX, json={"model": "new"}, headers=ADMIN), 202)
    await h.runtime.reindexer.work(max_batches=1)
    upstream.script("embeddings", Status(400, "this text is too long"))
    await h.runtime.reindexer.work()
    failed = await status(h)
    assert failed["status"] == "failed"
    assert failed["error"]
    assert failed["active_model"] == "old"
    assert_scored_by(await semantic(h, alice, "wool"), "old-embed", "wool", made)

    assert_ok(await h.client.post(REINDEX, json={"model": "new"}, headers=ADMIN), 202)
    await h.runtime.reindexer.work()
    assert (await status(h))["status"] == "done"
    # Each context once, but the batch the upstream refused (sent again after the restart).
    sent = Counter(embedded_texts(upstream, "new-embed"))
    assert set(sent) == set(made.values())
    assert sorted(sent.values()) == [1] * (len(made) - BATCH) + [2] * BATCH


# --- refusals -------------------------------------------------------------------------------------


async def test_a_second_start_while_one_runs_is_a_409(h: Harness, alice: dict[str, str]) -> None:
    await h.runtime.reindexer.stop()
    await load(h, alice)
    first = assert_ok(await h.client.post(REINDEX, json={"model": "new"}, headers=ADMIN), 202)
    for body in ({"model": "new"}, {"model": "old"}, None):
        error = assert_error(await h.client.post(REINDEX, json=body, headers=ADMIN), 409, "conflict_error")
        assert "already running" in error["message"]
        assert error["details"]["job_id"] == first["job_id"]
    assert (await status(h))["job_id"] == first["job_id"]
    await h.runtime.reindexer.work()
    assert_ok(await h.client.post(REINDEX, json={"model": "old"}, headers=ADMIN), 202)  # ended: a new one may start


async def test_a_model_that_does_not_exist_or_cannot_embed_is_a_400_naming_it(
    h: Harness, alice: dict[str, str]
) -> None:
    await load(h, alice, TEXTS[:2])
    refusals = [
        ("no-such-model", "'no-such-model' does not exist"),
        ("smollm2-135m", "'smollm2-135m' cannot do embed"),  # a chat model
        ("broken", "'broken' cannot embed"),  # configured as an embedding model; nothing answers
    ]
    for model, says in refusals:
        response = await h.client.post(REINDEX, json={"model": model}, headers=ADMIN)
        error = assert_error(response, 400, "validation_error")
        assert says in error["message"], error
        assert field_names(error) == {"model"}
    after = await status(h)
    assert (after["status"], after["active_model"], after["job_id"]) == ("idle", "old", None)  # nothing started


async def test_only_admins_reindex(h: Harness, alice: dict[str, str]) -> None:
    for method, body in (("POST", {"model": "new"}), ("GET", None)):
        response = await h.client.request(method, REINDEX, json=body, headers=alice)
        assert_error(response, 403, "authorization_error")
        assert_error(await h.client.request(method, REINDEX, json=body), 401, "authentication_error")
    assert (await status(h))["status"] == "idle"


BAD_BODIES: list[tuple[Any, str | None]] = [
    ({"model": 5}, "model"),
    ({"model": ""}, "model"),
    ({"model": ["new"]}, "model"),
    ({"model": None, "extra": 1}, "extra"),
    ({"model": "x" * 201}, "model"),
    ({"modle": "new"}, "modle"),
    ([], None),
    ("new", None),
]


async def test_bad_bodies_are_a_400_naming_the_field(h: Harness) -> None:
    for body, field in BAD_BODIES:
        error = assert_error(await h.client.post(REINDEX, json=body, headers=ADMIN), 400, "validation_error")
        if field is not None:
            assert field in field_names(error), (body, error)
    headers = {**ADMIN, "Content-Type": "application/json"}
    assert_error(await h.client.post(REINDEX, content=b'{"model": ', headers=headers), 400, "validation_error")
    # Nothing started; and GET /api/context/reindex is this route, not a context id.
    data = await status(h)
    assert data["status"] == "idle"
    assert set(data) >= {"status", "active_model", "target_model", "done", "total", "progress"}


async def test_the_active_model_is_pinned_so_a_config_change_alone_changes_nothing(
    make_harness: Callable[..., Any], upstream: FakeUpstream, tmp_path: Any
) -> None:
    """Changing the configured default embedding model does not switch searches (that would rank
    new-model queries against old-model vectors, or against none): it takes a reindex."""
    upstream.reset()
    url = f"sqlite+aiosqlite:///{tmp_path / 'pinned.db'}"
    models = {"old": embedder(upstream, "old-embed"), "new": embedder(upstream, "new-embed")}
    async with make_harness(database_url=url, models=models, gateway={"default_embed_model": "old"}) as h:
        _, key = await h.user_with_key("carol")
        carol = h.auth(key)
        made = await load(h, carol, TEXTS[:4])
    async with make_harness(database_url=url, models=models, gateway={"default_embed_model": "new"}) as h:
        await h.runtime.indexer.wait_idle()
        assert_scored_by(await semantic(h, carol, "ink"), "old-embed", "ink", made)
        made.update(await load(h, carol, ["Note 12: chalk"]))
        assert set(await vectors(h)) == {"old"}  # written with the active model, not the configured one
        started = assert_ok(await h.client.post(REINDEX, headers=ADMIN), 202)
        assert (started["active_model"], started["target_model"]) == ("old", "new")
        await h.runtime.reindexer.wait_idle()
        assert_scored_by(await semantic(h, carol, "ink"), "new-embed", "ink", made)
        async with h.runtime.database.session() as session:
            count = (await session.execute(select(func.count()).select_from(ContextEmbedding))).scalar_one()
        assert count == len(made)


# --- the active model is cached under an epoch: no read of the state row on a warm search ---------


def state_reads(h: Harness) -> list[str]:
    """Statements that touch ``context_embedding_state`` from now on."""
    statements: list[str] = []

    @event.listens_for(h.runtime.database.engine.sync_engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "context_embedding_state" in statement:
            statements.append(statement)

    return statements


@asynccontextmanager
async def change_arrives(h: Harness) -> AsyncIterator[None]:
    """Around another process's change: on PostgreSQL the embedding epoch is pushed (NOTIFY), so wait
    until the notification has reached this process. The file and Redis epochs are read per search."""
    epoch = h.runtime.indexer.models.epoch
    if isinstance(epoch, PostgresAuthEpoch):
        epoch.notified.clear()
    yield
    if isinstance(epoch, PostgresAuthEpoch):
        await asyncio.wait_for(epoch.notified.wait(), timeout=10)


async def test_a_warm_search_does_not_read_the_embedding_state(h: Harness, alice: dict[str, str]) -> None:
    made = await load(h, alice, TEXTS[:3])
    await semantic(h, alice, "warming up")
    reads = state_reads(h)
    for query in ("ink", "salt", "maps"):
        assert_scored_by(await semantic(h, alice, query), "old-embed", query, made)
        hybrid = assert_ok(await h.client.get(f"{API}/search", params={"query": query}, headers=alice))
        assert hybrid["model"] == "old"
    assert reads == []
    # A reindex started in this process is seen at once (its writes get the target's vectors too).
    await h.runtime.reindexer.stop()
    assert_ok(await h.client.post(REINDEX, json={"model": "new"}, headers=ADMIN), 202)
    made.update(await load(h, alice, ["Note 10: lanterns"]))
    assert set(await vectors(h)) == {"old", "new"}
    assert len(reads) > 0


async def test_a_switch_made_by_another_process_is_seen_by_searches(
    h: Harness,
    alice: dict[str, str],
    upstream: FakeUpstream,
    database_url: str,
    make_settings: Callable[..., Settings],
) -> None:
    await h.runtime.reindexer.stop()  # the other process works the reindex
    made = await load(h, alice, TEXTS[:4])
    assert_scored_by(await semantic(h, alice, "bells"), "old-embed", "bells", made)  # cached: old
    other = build_runtime(make_settings(**settings(upstream, database_url)))  # the CLI, another replica
    try:
        async with change_arrives(h):
            await other.reindexer.start(h.admin, "new", door="cli")
        # Started elsewhere: this process's writes now get the target's vectors too.
        fresh = await load(h, alice, ["Note 10: lanterns"])
        assert set(fresh) <= (await vectors(h))["new"]
        made.update(fresh)
        async with change_arrives(h):
            assert await other.reindexer.work()
    finally:
        await other.close()
    assert (await status(h))["active_model"] == "new"
    after = await semantic(h, alice, "bells")
    assert after["model"] == "new"
    assert_scored_by(after, "new-embed", "bells", made)
