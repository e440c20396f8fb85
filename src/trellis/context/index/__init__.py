"""Indexing contexts for semantic search: the vector index (one small protocol, two implementations)
and the indexer that fills it through the gateway.

Every vector is stored portably in ``context_embeddings.vector`` (float32, little-endian), one row
per context and embedding model, tagged with the ``content_hash`` of the content it was computed
from. Searches rank only the vectors of the *active* model (``state``); a reindex (``reindex``)
fills in another model's beside them and then switches. Where the vectors are searched depends on
the database:

``ExactVectorIndex`` (SQLite, and PostgreSQL without pgvector)
    Exact cosine top-k with numpy. An owner's vectors for one model are loaded into one normalised
    float32 matrix and cached in memory (LRU, bounded in bytes); scoring 100,000 vectors of 384
    dimensions is one matrix-vector product, about 4 ms. Correct across processes: before each
    search the owner's *vector epoch* is read (``context_vector_epochs``, one row), a counter that
    database triggers bump on every insert, update or delete of the owner's vectors — including
    cascades no code of ours sees and writes by other processes (the CLI, other replicas) — and the
    matrix is reloaded when it differs. Writes through this index drop the owner's matrix at once.
    Filters (types, metadata) run in SQL first; the surviving ids pick rows of the scores.

``PgVectorIndex`` (PostgreSQL with the ``embedding vector(N)`` column migration 0003 adds when
pgvector is available)
    Writes the ``embedding`` column too and asks ``ORDER BY embedding <=> :q LIMIT k``, so the HNSW
    index answers, with ``hnsw.ef_search`` raised on the connection (once per pooled connection).
    With pgvector >= 0.7 the graph holds half-precision copies (migration 0006: an index on
    ``embedding::halfvec(N)``): the walk orders by the half-precision distance, which is what the
    index can serve, and the rows it returns are scored, and sorted, by their float32 vectors.
    HNSW applies WHERE clauses *after* the graph walk: the walk yields ``ef_search`` candidates
    across all owners, the owner and filter predicates drop most of them, and the query can return
    fewer than ``k`` rows although more match. On pgvector >= 0.8 the walk continues
    (``hnsw.iterative_scan = relaxed_order``); on older versions it does not.
    Either way, when fewer than ``k`` rows come back the query is repeated exactly — the same
    predicates, ordered by an expression the index cannot serve — which is cheap precisely because
    it happens when few rows match. A query whose dimensions differ from the column's (another
    embedding model) is answered by the exact index.

``AutoVectorIndex`` picks one on first use: ``PgVectorIndex`` when the ``embedding`` column exists.

Modules: ``base`` (the protocols: ``VectorIndex`` and the ``ContextIndexer`` seam writes call),
``repository`` (the SQL both indexes and the indexer share), ``exact``, ``pgvector``, ``auto``
(choosing), ``service`` (``GatewayIndexer``), ``state`` (the active model), ``reindex``
(``Reindexer``: changing the model), ``api`` and ``schemas`` (its REST door), ``models``
(``context_embeddings``, the epochs, the embedding state).
"""
