"""How ``context_store.py`` measures one backend: ingestion, search latency per mode (and the time of
each stage of a search), recall of the semantic index, an IVFFlat what-if, and hybrid over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sqlite3
import statistics
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _common import HOST, NOISE_WARN_PCT, BenchError, percentile
from _context_corpus import Corpus, FloatMatrix
from _context_results import (
    HTTP_MODE,
    LIMIT,
    MODES,
    REPEATED_MODE,
    EfPoint,
    IngestStep,
    IvfPoint,
    ModePoint,
    RecallPoint,
    SweepNumbers,
)
from _cpu import CpuMeter, ProcessTree, wait_until_quiet
from _server import Server

HYBRID_DEPTH = 50  # what hybrid asks each retriever for at limit 10 (search.py: max(2 * limit, 50))
SEARCH_PATH = "/api/context/search"
# During ingestion: after a batch during which other processes used more than this (% of one core),
# pause until the machine is quiet again (within --quiet-wait and the run's --pause-budget).
PAUSE_PCT = 50.0


@dataclass
class Target:
    """One backend's database: where it is, which processes work for it, and how to clean it up."""

    name: str
    url: str
    ours: ProcessTree
    description: str = ""
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def meter(self) -> CpuMeter:
        """Around a phase: the CPU the rest of the machine used, beside our processes."""
        return CpuMeter(ours=self.ours.cpu)


def quiet(args: argparse.Namespace) -> None:
    """Wait (at most --quiet-wait, and what is left of --pause-budget) for a quiet machine."""
    limit = min(args.quiet_wait, args.pause_left)
    if limit <= 0:
        return
    started = time.monotonic()
    wait_until_quiet(limit)
    args.pause_left -= time.monotonic() - started


def noisy(points: Sequence[ModePoint]) -> float:
    """The other processes' CPU during these points, when above the warning level (else 0)."""
    worst = max((p.other_cpu_pct or 0.0 for p in points), default=0.0)
    return worst if worst > NOISE_WARN_PCT else 0.0


# --- timing the stages of a search ------------------------------------------------------------


class Stages:
    """Wraps the runtime's pieces (instance attributes, nothing in src/ changes) and adds up the time
    spent in each while ``sink`` is set."""

    def __init__(self) -> None:
        self.sink: dict[str, float] | None = None

    def wrap(self, name: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                if self.sink is not None:
                    self.sink[name] = self.sink.get(name, 0.0) + time.perf_counter() - started

        return timed


async def instrument(runtime: Any, stages: Stages) -> Any:
    """Time gateway.embed, the keyword retriever, the vector index (and, for the exact index, its
    change marker and matrix load), the final row fetch, and vector writes. Returns the chosen index."""
    from trellis.context.index.exact import ExactVectorIndex
    from trellis.context.index.pgvector import PgVectorIndex

    chosen = await runtime.vector_index.resolve()
    runtime.gateway.embed = stages.wrap("embed", runtime.gateway.embed)
    search = runtime.search
    search.keyword = stages.wrap("keyword", search.keyword)
    search.fetch_contexts = stages.wrap("fetch", search.fetch_contexts)
    runtime.vector_index.search = stages.wrap("vector", runtime.vector_index.search)
    runtime.vector_index.upsert = stages.wrap("upsert", runtime.vector_index.upsert)
    exact = (
        chosen if isinstance(chosen, ExactVectorIndex) else chosen.exact if isinstance(chosen, PgVectorIndex) else None
    )
    if exact is not None:
        exact.marker = stages.wrap("marker", exact.marker)
        exact.load_matrix = stages.wrap("load", exact.load_matrix)
    return chosen


def make_settings(data_dir: Path, url: str, admin_key: str, jwt_secret: str, workflow_secret_key: str) -> Any:
    """Off SQLite a runtime needs workflow secret keys (processes sharing the database share them):
    the in-process runtime and the ``trellis serve`` beside it get the same one."""
    from trellis.settings import Settings
    from trellis.settings.gateway import GatewaySettings

    return Settings(
        data_dir=data_dir,
        database_url=url,
        jwt_secret=jwt_secret,
        bootstrap_admin_key=admin_key,
        workflow={"secret_keys": [workflow_secret_key]},
        log_level="WARNING",
        rate_limit_enabled=False,
        # Every query is measured cold: the modes take turns on the same text, and the gateway's
        # cache would spare the later ones the embedding.
        gateway=GatewaySettings(cache_enabled=False),
    )


async def describe(runtime: Any) -> str:
    from sqlalchemy import text

    if runtime.database.dialect == "sqlite":
        return f"SQLite {sqlite3.sqlite_version} (file, WAL)"
    async with runtime.database.session() as session:
        version = (await session.execute(text("SHOW server_version"))).scalar_one()
        vector = (
            await session.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
        ).scalar_one_or_none()
        buffers = (await session.execute(text("SHOW shared_buffers"))).scalar_one()
    extension = f", pgvector {vector}" if vector else ", no pgvector"
    return f"PostgreSQL {version.split()[0]}{extension}, shared_buffers {buffers}"


async def ingest_step(
    runtime: Any,
    owner_id: str,
    corpus: Corpus,
    start: int,
    stop: int,
    args: argparse.Namespace,
    stages: Stages,
    target: Target,
) -> IngestStep:
    from sqlalchemy import insert, select

    from trellis.context.index.base import VectorEntry
    from trellis.context.index.models import ContextEmbedding
    from trellis.context.models import Context
    from trellis.kit.vector_math import from_blob

    embed = corpus.known < stop
    if embed and corpus.known != start:
        raise BenchError("vectors must be computed in order")
    model = runtime.indexer.model_name()
    if model is None:
        raise BenchError("no embedding model: the gateway's default embedding model did not resolve")
    how = "insert + embed (GatewayIndexer.index)" if embed else "insert + vectors reused (vector_index.upsert)"
    print(f"   ingest {start:,} -> {stop:,}: {how}, batches of {args.batch}", flush=True)
    stages.sink = {}
    insert_s = index_s = other_cpu_s = paused_s = 0.0
    now = runtime.clock.now()
    failures_before = runtime.indexer.stats.failures
    last_report = time.monotonic()
    noise_known = True
    for low in range(start, stop, args.batch):
        high = min(low + args.batch, stop)
        rows = [
            {
                "id": corpus.ids[i],
                "owner_id": owner_id,
                "type": corpus.types[i],
                "content": corpus.texts[i],
                "meta": {"topic": corpus.topics[i], "n": i},
                "content_hash": corpus.hashes[i],
                "version": 1,
                "source": None,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(low, high)
        ]
        with target.meter() as meter:
            t0 = time.perf_counter()
            async with runtime.database.transaction() as session:
                await session.execute(insert(Context), rows)
            t1 = time.perf_counter()
            if embed:
                await runtime.indexer.index(owner_id, corpus.ids[low:high])
            else:
                entries = [VectorEntry(corpus.ids[i], corpus.hashes[i], corpus.vectors[i]) for i in range(low, high)]
                await runtime.vector_index.upsert(owner_id, model, entries)
            t2 = time.perf_counter()
        insert_s += t1 - t0
        index_s += t2 - t1
        if meter.other_pct is None:
            noise_known = False
        else:
            other_cpu_s += meter.other_pct / 100 * (t2 - t0)
        if time.monotonic() - last_report > 30 or high == stop:
            last_report = time.monotonic()
            rate = (high - start) / (insert_s + index_s)
            eta = (stop - high) / rate if rate else 0
            print(f"     {high:,}/{stop:,}  {rate:,.0f} contexts/s  eta {eta / 60:.1f} min", flush=True)
        if high < stop and meter.other_pct is not None and meter.other_pct > PAUSE_PCT and args.pause_left > 0:
            print(
                f"     other processes used {meter.other_pct:.0f}% of a core during the last batch: pausing", flush=True
            )
            paused = time.monotonic()
            await asyncio.to_thread(quiet, args)
            paused_s += time.monotonic() - paused
    seconds = insert_s + index_s
    sink, stages.sink = stages.sink, None
    if runtime.indexer.stats.failures != failures_before:
        raise BenchError(f"the indexer failed {runtime.indexer.stats.failures - failures_before} batch(es)")
    if embed:
        # The vectors the indexer stored: what every later backend gets, and the recall reference.
        position = {corpus.ids[i]: i for i in range(start, stop)}
        async with runtime.database.session() as session:
            result = await session.execute(
                select(ContextEmbedding.context_id, ContextEmbedding.vector).where(ContextEmbedding.model == model)
            )
            found = 0
            for context_id, blob in result:
                row = position.get(context_id)
                if row is not None:
                    corpus.vectors[row] = from_blob(blob)
                    found += 1
        if found != stop - start:
            raise BenchError(f"the indexer stored {found} vectors for {stop - start} contexts")
        corpus.known = stop
    maintenance = ""
    if runtime.database.dialect == "postgresql":
        # What autovacuum would do after a bulk load; done now so plans and timings are steady.
        from sqlalchemy import text

        async with runtime.database.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("VACUUM ANALYZE contexts"))
            await conn.execute(text("VACUUM ANALYZE context_embeddings"))
        maintenance = "VACUUM ANALYZE after the step"
    return IngestStep(
        backend=target.name,
        start=start,
        stop=stop,
        embedded=embed,
        seconds=seconds,
        insert_s=insert_s,
        index_s=index_s,
        embed_s=sink.get("embed", 0.0),
        upsert_s=sink.get("upsert", 0.0),
        other_cpu_pct=other_cpu_s / seconds * 100 if noise_known and seconds > 0 else None,
        paused_s=paused_s,
        maintenance=maintenance,
    )


async def measure_search(
    runtime: Any,
    principal: Any,
    queries: Sequence[str],
    args: argparse.Namespace,
    stages: Stages,
    target: Target,
    size: int,
) -> list[ModePoint]:
    from trellis.context.search.schemas import SearchQuery

    async def one(query: str, mode: str) -> tuple[float, int, dict[str, float]]:
        if mode == REPEATED_MODE:
            return await again(query)
        stages.sink = {}
        started = time.perf_counter()
        result = await runtime.search.search(principal, SearchQuery.parse(query, mode=mode, limit=LIMIT))
        elapsed = time.perf_counter() - started
        sink, stages.sink = stages.sink, None
        # What no timed stage covers: parsing, fusion, the Python around the calls.
        sink["rest"] = max(0.0, elapsed - sum(sink.get(n, 0.0) for n in ("embed", "keyword", "vector", "fetch")))
        if result.degraded:
            raise BenchError(f"{mode} search degraded: {result.degraded}")
        return elapsed * 1000, len(result.hits), sink

    async def again(query: str) -> tuple[float, int, dict[str, float]]:
        # The gateway reads cache_enabled on every call: on for this query's two searches only, the
        # first (not measured) caches its vector, the second is measured.
        runtime.settings.gateway.cache_enabled = True
        try:
            await runtime.search.search(principal, SearchQuery.parse(query, mode="hybrid", limit=LIMIT))
            return await one(query, "hybrid")
        finally:
            runtime.settings.gateway.cache_enabled = False

    modes = (*MODES, REPEATED_MODE)
    # Warm-up: the first call of each mode is the cold one (the exact index loads its matrix there).
    cold: dict[str, float] = {}
    for mode in modes:
        for i in range(max(1, args.warmup)):
            elapsed, _, _ = await one(queries[(i * 7) % len(queries)], mode)
            cold.setdefault(mode, elapsed)
    await asyncio.to_thread(quiet, args)
    latencies: dict[str, list[float]] = {m: [] for m in modes}
    embeds: dict[str, list[float]] = {m: [] for m in modes}
    hits: dict[str, list[int]] = {m: [] for m in modes}
    stage_samples: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with target.meter() as meter:
        for i, query in enumerate(queries):
            # Modes interleaved, their order rotated: a drift of the machine hits all of them alike.
            for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
                elapsed, found, sink = await one(query, mode)
                latencies[mode].append(elapsed)
                hits[mode].append(found)
                stage_samples[mode].append(sink)
                if "embed" in sink:
                    embeds[mode].append(sink["embed"] * 1000)
    points = []
    for mode in modes:
        names = sorted({name for sample in stage_samples[mode] for name in sample})
        stage_p50 = {name: percentile([s.get(name, 0.0) * 1000 for s in stage_samples[mode]], 50) for name in names}
        points.append(
            ModePoint(
                backend=target.name,
                size=size,
                mode=mode,
                latencies_ms=latencies[mode],
                cold_ms=cold.get(mode),
                embed_ms=embeds[mode],
                stages_ms=stage_p50,
                hits_mean=statistics.fmean(hits[mode]),
                other_cpu_pct=meter.other_pct,
            )
        )
        print(
            f"   {size:,} {mode:<8}  p50 {points[-1].p50:7.2f} ms  p95 {points[-1].p95:7.2f} ms"
            f"  (cold {cold[mode]:.1f} ms)",
            flush=True,
        )
    return points


def exact_top(reference: FloatMatrix, query: FloatMatrix, k: int) -> list[int]:
    scores = reference @ query
    part = np.argpartition(-scores, k - 1)[:k]
    return [int(i) for i in part[np.lexsort((part, -scores[part]))]]


@dataclass
class _RecallInputs:
    reference: FloatMatrix  # the first ``size`` vectors, normalised
    queries: list[FloatMatrix]  # normalised
    position: dict[str, int]  # context id -> row of ``reference``


def _recall_inputs(corpus: Corpus, query_vectors: FloatMatrix, size: int) -> _RecallInputs:
    reference = corpus.vectors[:size]
    norms = np.linalg.norm(reference, axis=1, keepdims=True)
    return _RecallInputs(
        reference / np.where(norms > 0, norms, 1.0),
        [q / max(float(np.linalg.norm(q)), 1e-12) for q in query_vectors],
        {corpus.ids[i]: i for i in range(size)},
    )


async def _sweep(inputs: _RecallInputs, search: Callable[[FloatMatrix, int], Awaitable[list[str]]]) -> SweepNumbers:
    """Recall against exact top-k and latency of ``search`` (query, k) -> ids, at k = 10 and 50."""
    found: dict[int, list[float]] = {LIMIT: [], HYBRID_DEPTH: []}
    took: dict[int, list[float]] = {LIMIT: [], HYBRID_DEPTH: []}
    for query in inputs.queries:
        for k in found:
            started = time.perf_counter()
            ids = await search(query, k)
            took[k].append((time.perf_counter() - started) * 1000)
            expected = set(exact_top(inputs.reference, query, k))
            found[k].append(len(expected & {inputs.position[context_id] for context_id in ids}) / k)
    return SweepNumbers(
        statistics.fmean(found[LIMIT]),
        statistics.fmean(found[HYBRID_DEPTH]),
        percentile(took[LIMIT], 50),
        percentile(took[LIMIT], 95),
        percentile(took[HYBRID_DEPTH], 50),
        percentile(took[HYBRID_DEPTH], 95),
    )


async def _plan(runtime: Any, chosen: Any, owner_id: str, model: str, query: FloatMatrix) -> str:
    """EXPLAIN of the approximate query PgVectorIndex sends."""
    from sqlalchemy import text

    from trellis.context.index.base import NO_FILTER

    statement = chosen.search_statement(owner_id, model, NO_FILTER, LIMIT, exact=False).params(q=query.tolist())
    sql = str(statement.compile(runtime.database.engine, compile_kwargs={"literal_binds": True}))
    async with runtime.database.engine.connect() as conn:
        return "\n".join(row[0] for row in await conn.execute(text("EXPLAIN " + sql)))


async def measure_recall(
    runtime: Any,
    owner_id: str,
    model: str,
    chosen: Any,
    corpus: Corpus,
    query_vectors: FloatMatrix,
    target: Target,
    size: int,
    args: argparse.Namespace,
) -> RecallPoint:
    from trellis.context.index.pgvector import PgVectorIndex

    inputs = _recall_inputs(corpus, query_vectors, size)
    if not isinstance(chosen, PgVectorIndex):
        # Exact by construction (a full scan): check only that the benchmark's reference agrees.
        agrees = 0
        for query in inputs.queries:
            hits = await chosen.search(owner_id, model, query, LIMIT)
            agrees += [inputs.position[h.context_id] for h in hits] == exact_top(inputs.reference, query, LIMIT)
        return RecallPoint(
            target.name, size, chosen.kind, False, None, None, 0, "full scan", agrees, len(inputs.queries)
        )
    sweep: list[EfPoint] = []
    service_ef = chosen.ef_search
    for ef_search in sorted({service_ef, *args.ef_search}):
        # The service's index for the default; the same index with another ef_search for the others.
        index = chosen
        if ef_search != service_ef:
            index = PgVectorIndex(
                runtime.database,
                dimensions=chosen.dimensions,
                extension_version=chosen.extension_version,
                ef_search=ef_search,
                exact=chosen.exact,
                halfvec=chosen.halfvec,
            )
        fallbacks = index.exact_fallbacks

        async def search(query: FloatMatrix, k: int, index: PgVectorIndex = index) -> list[str]:
            return [hit.context_id for hit in await index.search(owner_id, model, query, k)]

        numbers = await _sweep(inputs, search)
        sweep.append(
            EfPoint(
                ef_search=ef_search,
                **asdict(numbers),
                exact_fallbacks=index.exact_fallbacks - fallbacks,
                service=ef_search == service_ef,
            )
        )
    plan = await _plan(runtime, chosen, owner_id, model, inputs.queries[0])
    uses = "HNSW index scan" if "ix_context_embeddings_hnsw" in plan else "no HNSW (exact scan + sort)"
    default = next(point for point in sweep if point.ef_search == service_ef)
    return RecallPoint(
        target.name,
        size,
        chosen.kind,
        True,
        default.recall_at_10,
        default.recall_at_50,
        default.exact_fallbacks,
        uses,
        0,
        len(inputs.queries),
        sweep,
    )


async def measure_ivfflat(
    runtime: Any,
    owner_id: str,
    model: str,
    chosen: Any,
    corpus: Corpus,
    query_vectors: FloatMatrix,
    size: int,
    probes_values: Sequence[int],
) -> list[IvfPoint]:
    """What if pgvector searched an IVFFlat index instead of the HNSW one? Drops the HNSW index (this
    database is the benchmark's own and measured already), builds IVFFlat with lists = sqrt(rows)
    (pgvector's advice up to a million rows) over the same expression as the HNSW index (``halfvec``
    copies since migration 0006) and measures recall and latency per ``ivfflat.probes`` through the
    same query ``PgVectorIndex`` sends, the same way as the ef_search sweep."""
    from sqlalchemy import text

    from trellis.context.index.base import NO_FILTER

    inputs = _recall_inputs(corpus, query_vectors, size)
    lists = max(1, round(size**0.5))
    indexed = (
        f"(embedding::halfvec({chosen.dimensions})) halfvec_cosine_ops"
        if chosen.halfvec
        else "embedding vector_cosine_ops"
    )
    started = time.perf_counter()
    async with runtime.database.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        await conn.execute(text("DROP INDEX IF EXISTS ix_context_embeddings_hnsw"))
        await conn.execute(text("SET maintenance_work_mem = '1GB'"))
        await conn.execute(
            text(
                f"CREATE INDEX ix_bench_ivfflat ON context_embeddings USING ivfflat ({indexed}) WITH (lists = {lists})"
            )
        )
        await conn.execute(text("ANALYZE context_embeddings"))
    build_s = time.perf_counter() - started
    points = []
    for probes in probes_values:

        async def search(query: FloatMatrix, k: int, probes: int = probes) -> list[str]:
            vector = query.tolist()
            async with runtime.database.transaction() as session:
                await session.execute(text("SELECT set_config('ivfflat.probes', :p, true)"), {"p": str(probes)})
                statement = chosen.search_statement(owner_id, model, NO_FILTER, k, exact=False)
                return [row[0] for row in await session.execute(statement, {"q": vector})]

        numbers = await _sweep(inputs, search)
        explained = await _plan(runtime, chosen, owner_id, model, inputs.queries[0])
        plan = "IVFFlat index scan" if "ix_bench_ivfflat" in explained else "no IVFFlat (exact scan + sort)"
        points.append(IvfPoint(size=size, lists=lists, build_s=build_s, probes=probes, plan=plan, **asdict(numbers)))
        print(
            f"   IVFFlat what-if, probes {probes}: recall@10 {numbers.recall_at_10:.3f},"
            f" k=10 p50 {numbers.k10_p50_ms:.2f} ms ({plan})",
            flush=True,
        )
    return points


# --- HTTP ---------------------------------------------------------------------------------------


def _get(connection: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def measure_http(
    trellis: Path,
    env: dict[str, str],
    workdir: Path,
    admin_key: str,
    queries: Sequence[str],
    args: argparse.Namespace,
    target: Target,
    size: int,
    in_process: Callable[[str], float],
) -> ModePoint:
    """Hybrid through ``GET /api/context/search`` on a ``trellis serve`` using the same database.

    Each query is also searched in process (``in_process``, its latency in ms), the two alternating
    which goes first: the per-query difference is the HTTP door's cost, free of the machine's drift
    between the in-process phase and this one."""
    server = Server(trellis, env, workdir)  # not pinned: on every CPU, like the in-process search
    headers = {"Authorization": f"Bearer {admin_key}"}
    latencies: list[float] = []
    paired: list[float] = []
    hits: list[int] = []
    try:
        server.start()
        connection = http.client.HTTPConnection(HOST, server.port, timeout=60)

        def search(query: str) -> tuple[float, int]:
            path = f"{SEARCH_PATH}?{urllib.parse.urlencode({'query': query, 'mode': 'hybrid', 'limit': LIMIT})}"
            started = time.perf_counter()
            status, body = _get(connection, path, headers)
            elapsed = (time.perf_counter() - started) * 1000
            if status != 200:
                raise BenchError(f"GET {path} answered {status}: {body[:300]!r}\n{server.log_tail()}")
            document = json.loads(body)
            if document["data"]["degraded"]:
                raise BenchError(f"hybrid over HTTP degraded: {document['data']['degraded']}")
            return elapsed, len(document["data"]["items"])

        cold = None
        for i in range(max(1, args.warmup)):
            elapsed, _ = search(queries[(i * 7) % len(queries)])
            cold = elapsed if cold is None else cold
        quiet(args)
        # The wait may outlast uvicorn's 5 s keep-alive: start the measured requests on a fresh
        # connection (http.client reconnects on the next request) instead of a closed one.
        connection.close()
        with target.meter() as meter:
            for i, query in enumerate(queries):
                if i % 2:
                    paired.append(in_process(query))
                elapsed, found = search(query)
                if not i % 2:
                    paired.append(in_process(query))
                latencies.append(elapsed)
                hits.append(found)
        connection.close()
    finally:
        server.stop()
    point = ModePoint(
        target.name, size, HTTP_MODE, latencies, cold, [], {}, statistics.fmean(hits), meter.other_pct, paired
    )
    print(
        f"   {size:,} {HTTP_MODE:<8}  p50 {point.p50:7.2f} ms  p95 {point.p95:7.2f} ms  (in process, alternated: "
        f"p50 {percentile(paired, 50):.2f} p95 {percentile(paired, 95):.2f}; the door adds {point.door_p50:+.2f} ms "
        "at p50)",
        flush=True,
    )
    return point


def in_process_hybrid(runtime: Any, principal: Any, loop: asyncio.AbstractEventLoop) -> Callable[[str], float]:
    """A hybrid search through the service layer, callable from ``measure_http``'s thread: ms taken."""
    from trellis.context.search.schemas import SearchQuery

    async def search(query: str) -> float:
        started = time.perf_counter()
        result = await runtime.search.search(principal, SearchQuery.parse(query, mode="hybrid", limit=LIMIT))
        elapsed = (time.perf_counter() - started) * 1000
        if result.degraded:
            raise BenchError(f"hybrid search degraded: {result.degraded}")
        return elapsed

    return lambda query: asyncio.run_coroutine_threadsafe(search(query), loop).result()
