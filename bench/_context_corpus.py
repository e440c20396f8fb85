"""The context store benchmark's corpus: seeded synthetic technical paragraphs and queries, and the
cache of their vectors (``--vectors-cache``). ``embedding_compute.py`` embeds the same texts."""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

DIMENSIONS = 384
FloatMatrix = npt.NDArray[np.float32]

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


def generate_corpus(size: int, seed: int, *, texts_only: bool = False) -> Corpus:
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
    if texts_only:  # for corpus_digest: no ids, hashes or vectors
        return Corpus(texts, types, topics, [], [], np.zeros((0, DIMENSIONS), dtype=np.float32))
    ids = [f"ctx_{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(size)]
    return Corpus(
        texts=texts,
        types=types,
        topics=topics,
        ids=ids,
        hashes=[content_hash(t) for t in texts],
        vectors=np.zeros((size, DIMENSIONS), dtype=np.float32),
    )


def corpus_digest(corpus: Corpus, count: int | None = None) -> str:
    """What cached vectors must have been computed from: the embedding model's name, how it computes
    (its ``quantize`` option and the quantization recipe) and every text (the first ``count``)."""
    from trellis.gateway.providers.onnx_embed import quantize_mode
    from trellis.gateway.providers.onnx_quantize import RECIPE
    from trellis.settings.gateway import DEFAULT_EMBED_MODEL, default_models

    quantize = quantize_mode(default_models()[DEFAULT_EMBED_MODEL])
    compute = RECIPE if quantize == "dynamic" else quantize
    digest = hashlib.sha256(f"{DEFAULT_EMBED_MODEL}\n{DIMENSIONS}\n{compute}\n".encode())
    for text in corpus.texts[:count]:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


# --synthesize-vectors: the length of the noise added to a mix of two real vectors (before
# normalising). 0.5 makes made-up vectors look like real ones: against 4,000 embedded vectors of this
# corpus, the median cosine to the nearest real vector 0.83 (real ones: 0.81), the mean cosine to
# all 0.31 (0.31), to their topic's 0.64 (0.64); with 0.05 the nearest was at 0.94, too close.
SYNTHETIC_NOISE = 0.5


def load_vectors(path: Path, corpus: Corpus, *, seed: int = 7, synthesize: bool = False) -> bool:
    """Fill ``corpus.vectors`` from the cache at ``path``: its vectors when it holds this corpus's;
    the first ``len(corpus)`` when it holds a larger corpus of the same seed (the texts are
    generated in order, so a smaller corpus is a prefix of a larger one); with ``synthesize``, when
    it holds a prefix of this corpus, those and made-up vectors for the rest (``synthesize_rest``).
    False (and nothing loaded) when it holds none of these."""
    if not path.is_file():
        return False
    with np.load(path) as data:
        digest, vectors = str(data["digest"]), np.asarray(data["vectors"], dtype=np.float32)
    size, cached = len(corpus), vectors.shape[0]
    if vectors.ndim != 2 or vectors.shape[1] != DIMENSIONS:
        cached = -1
    if cached == size and digest == corpus_digest(corpus):
        corpus.vectors[:] = vectors
        corpus.source = "cache"
    elif cached > size and digest == corpus_digest(generate_corpus(cached, seed, texts_only=True)):
        corpus.vectors[:] = vectors[:size]
        corpus.source = f"cache (the first {size:,} of its {cached:,})"
    elif synthesize and 0 < cached < size and digest == corpus_digest(corpus, cached):
        corpus.vectors[:cached] = vectors
        synthesize_rest(corpus, cached, seed)
        corpus.source = f"cache for the first {cached:,}, synthesized for the other {size - cached:,}"
    else:
        print(f"{path}: vectors of another corpus or model; embedding, then overwriting it", flush=True)
        return False
    corpus.known = size
    return True


def synthesize_rest(corpus: Corpus, real: int, seed: int) -> None:
    """Vectors for contexts ``real`` onwards, made up from the real ones (``--synthesize-vectors``):
    each mixes two real vectors of its topic (weights 0.3-0.7) plus random noise (``SYNTHETIC_NOISE``),
    normalised, so the made-up ones sit inside their topic's cluster, as far from their neighbours
    as embedded ones do, and none is a duplicate.
    Search costs that do not look at vector values (the exact index's product, keyword retrieval,
    fetching rows) are as with real vectors; an HNSW walk's cost and recall depend on how the
    vectors are spread, so pgvector numbers over such vectors are an estimate."""
    rng = np.random.default_rng(seed)
    by_topic: dict[str, list[int]] = {}
    for i in range(real):
        by_topic.setdefault(corpus.topics[i], []).append(i)
    everything = list(range(real))
    for i in range(real, len(corpus)):
        pool = by_topic.get(corpus.topics[i]) or everything
        a, b = rng.choice(len(pool), size=2)
        weight = rng.uniform(0.3, 0.7)
        mixed = weight * corpus.vectors[pool[a]] + (1 - weight) * corpus.vectors[pool[b]]
        mixed = mixed + rng.normal(0.0, SYNTHETIC_NOISE / np.sqrt(DIMENSIONS), DIMENSIONS).astype(np.float32)
        corpus.vectors[i] = mixed / max(float(np.linalg.norm(mixed)), 1e-12)


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
