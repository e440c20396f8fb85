"""How often does search put the right document first, in the top five, in the top ten?

A labelled evaluation over real documentation already installed on this machine (see
``_retrieval_corpus.py``: Python's help topics, the READMEs of the packages ``requirements.lock``
pins, the Markdown files those packages ship), with questions in ``bench/retrieval/questions.jsonl``
of three kinds:

* ``paraphrase``: phrased without the target document's distinctive words (over half of them);
* ``identifier``: an exact name from the document (a function, class, file name);
* ``near_duplicate``: one document among several near-identical ones (``httpcore``/``httpcore2``,
  the ``types-*`` stubs, the ``taskiq-*`` brokers, the Python help topics that overlap).

Each question has 1-3 relevant documents and a split, ``dev`` (tune on these) or ``test`` (report
these; never tune on them). The run starts Trellis in process on a fresh data directory (SQLite,
or a temporary PostgreSQL database with ``--postgres``), ingests the corpus through the public API
(``POST /api/context/ingest``, 40 files a request), waits for the embeddings, then asks every
question in each mode through ``GET /api/context/search`` and prints, per mode and per kind:

* ``R@1``, ``R@5``, ``R@10``: document-level recall at k, per question
  ``|relevant in top k| / min(k, |relevant|)`` (so a question with two relevant documents counts 1.0
  at k=1 when either is first), averaged;
* ``MRR@10``: the mean of 1 / rank of the first relevant document within the top 10, else 0;
* latency p50/p95 of the search request (in process, through the ASGI app: HTTP routing,
  validation and JSON included, no socket).

With ``--rerank`` every mode is asked twice, as it is and with ``rerank=true`` (rows ``MODE+rr``: the
cross-encoder reorders the best ``[context] rerank_depth`` fused candidates), in the same run on the
same ingested store; the reranker's own time per query (``rerank.milliseconds`` in each answer, p50
and p95) is printed beside the request latency.

Document-level: a hit counts for its document (its ``source``) whatever chunk it is; the ranking of
documents is the order of their first hit (unless the service answers per document itself).

    .venv/bin/python bench/retrieval_quality.py                 # SQLite, every split, every mode
    .venv/bin/python bench/retrieval_quality.py --split dev     # what levers are tuned on
    .venv/bin/python bench/retrieval_quality.py --modes hybrid --rerank   # hybrid with and without the reranker
    .venv/bin/python bench/retrieval_quality.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Results are saved to ``bench/results/retrieval_quality-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, percentile
from _retrieval_corpus import QUESTIONS, Document, build

MODES = ("keyword", "semantic", "hybrid")
KINDS = ("paraphrase", "identifier", "near_duplicate")
FILES_PER_REQUEST = 40
FETCH = 50  # hits asked for per question: chunks of one document repeat, documents are counted


def load_questions(split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    return [q for q in rows if split == "all" or q["split"] == split]


def document_ranking(items: Sequence[dict[str, Any]]) -> list[str]:
    """Sources in the order of their first hit (a per-document answer is already that)."""
    seen: dict[str, None] = {}
    for item in items:
        source = item["context"]["source"]
        if source is not None:
            seen.setdefault(source, None)
    return list(seen)


def score(ranking: Sequence[str], relevant: Sequence[str]) -> dict[str, float]:
    wanted = set(relevant)
    out: dict[str, float] = {}
    for k in (1, 5, 10):
        out[f"R@{k}"] = len(wanted & set(ranking[:k])) / min(k, len(wanted))
    first = next((rank for rank, source in enumerate(ranking[:10], start=1) if source in wanted), None)
    out["MRR@10"] = 1.0 / first if first else 0.0
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from trellis.app import create_app
    from trellis.settings import Settings
    from trellis.settings.gateway import GatewaySettings
    from trellis.storage import migrate

    documents, drift = build()
    if drift:
        print(
            f"warning: {len(drift)} documents differ from bench/retrieval/corpus.json "
            f"(another Python or lock?): {', '.join(drift[:5])}",
            file=sys.stderr,
        )
    questions = load_questions(args.split)
    data_dir = Path(tempfile.mkdtemp(prefix="trellis-retrieval-"))
    admin_key = "trellis_" + secrets.token_urlsafe(24)
    url = f"sqlite+aiosqlite:///{data_dir / 'trellis.db'}"
    database_name = None
    if args.postgres:
        import asyncpg

        database_name = f"retrieval_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(args.postgres.replace("postgresql+asyncpg://", "postgresql://"))
        await conn.execute(f'CREATE DATABASE "{database_name}"')
        await conn.close()
        base = args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        url = f"{base}/{database_name}"
    overrides: dict[str, Any] = json.loads(args.settings) if args.settings else {}
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        jwt_secret=secrets.token_urlsafe(32),
        bootstrap_admin_key=admin_key,
        log_level="WARNING",
        rate_limit_enabled=False,
        gateway=GatewaySettings(cache_enabled=False, default_embed_model=args.embed_model),
        **overrides,
    )
    app = create_app(settings)
    runtime = app.state.runtime
    await migrate.upgrade(runtime.database)
    await runtime.auth.bootstrap_admin()
    headers = {"Authorization": f"Bearer {admin_key}"}
    report: dict[str, Any] = {"questions": len(questions), "documents": len(documents), "split": args.split}
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://trellis.bench", timeout=600) as client:
                started = time.perf_counter()
                chunks = await ingest(client, headers, documents)
                await runtime.indexer.wait_idle()
                report["ingest_seconds"] = round(time.perf_counter() - started, 1)
                report["contexts"] = chunks + len(documents)
                print(
                    f"ingested {len(documents)} documents ({chunks} chunks) in {report['ingest_seconds']} s "
                    f"through POST /api/context/ingest, embeddings included"
                )
                extra = json.loads(args.params) if args.params else {}
                report["modes"] = {}
                for group in args.groups:
                    for mode in args.modes:
                        name = mode if group == "context" else f"{mode}/doc"
                        params = extra if group == "context" else {**extra, "group": group}
                        report["modes"][name] = await evaluate(client, headers, questions, mode, params)
                        if args.rerank:
                            reranked = {**params, "rerank": "true"}
                            report["modes"][f"{name}+rr"] = await evaluate(client, headers, questions, mode, reranked)
                if args.tune:
                    report["tuning"] = await tune(client, headers, load_questions("dev"))
                if args.tune_rerank:
                    depth = runtime.settings.context.rerank_depth
                    report["rerank_tuning"] = await tune_rerank(client, headers, load_questions("dev"), depth)
    finally:
        if database_name is not None:
            await runtime.database.dispose()
            import asyncpg

            conn = await asyncpg.connect(args.postgres.replace("postgresql+asyncpg://", "postgresql://"))
            await conn.execute(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')
            await conn.close()
    return report


async def ingest(client: Any, headers: dict[str, str], documents: Sequence[Document]) -> int:
    chunks = 0
    for start in range(0, len(documents), FILES_PER_REQUEST):
        batch = documents[start : start + FILES_PER_REQUEST]
        files = [("files", (d.name, d.text.encode(), "application/octet-stream")) for d in batch]
        response = await client.post("/api/context/ingest", files=files, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"ingest failed: {response.status_code} {response.text[:500]}")
        chunks += sum(f["chunks"] for f in response.json()["data"]["files"])
    return chunks


async def evaluate(
    client: Any, headers: dict[str, str], questions: Sequence[dict[str, Any]], mode: str, extra: dict[str, Any]
) -> dict[str, Any]:
    per_kind: dict[str, list[dict[str, float]]] = defaultdict(list)
    latencies: list[float] = []
    reranking: list[float] = []  # the reranker's own time per query, as each answer reports it
    misses: list[dict[str, Any]] = []
    for q in questions:
        params = {"query": q["question"], "mode": mode, "limit": FETCH, **extra}
        began = time.perf_counter()
        response = await client.get("/api/context/search", params=params, headers=headers)
        latencies.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"search failed: {response.status_code} {response.text[:500]}")
        data = response.json()["data"]
        if extra.get("rerank") == "true":
            if not data["rerank"]["applied"]:
                raise SystemExit(f"the reranker was not applied: {data['rerank']['reason']}")
            reranking.append(data["rerank"]["milliseconds"])
        ranking = document_ranking(data["items"])
        s = score(ranking, q["relevant"])
        per_kind[q["kind"]].append(s)
        per_kind["all"].append(s)
        per_kind[f"{q['split']}:{q['kind']}"].append(s)
        per_kind[f"{q['split']}:all"].append(s)
        if s["R@5"] < 1.0:
            misses.append({"id": q["id"], "kind": q["kind"], "top5": ranking[:5], "relevant": q["relevant"]})
    table = {
        kind: {metric: round(statistics.fmean(s[metric] for s in rows), 3) for metric in rows[0]} | {"n": len(rows)}
        for kind, rows in per_kind.items()
    }
    out: dict[str, Any] = {
        "metrics": table,
        "latency_ms": {"p50": round(percentile(latencies, 50), 1), "p95": round(percentile(latencies, 95), 1)},
        "misses": misses,
    }
    if reranking:
        # The first query loads the model: its time is the load's, not a query's.
        steady = reranking[1:] or reranking
        out["rerank_ms"] = {
            "first": reranking[0],
            "p50": round(percentile(steady, 50), 1),
            "p95": round(percentile(steady, 95), 1),
        }
    return out


async def tune(client: Any, headers: dict[str, str], questions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fusion parameters tried on the dev questions only: each retriever's ranking is fetched once (to
    the depth hybrid search uses for ``FETCH`` hits) and fused here by the service's own functions
    (``fuse``, ``fuse_documents``) for every combination; prints the best few by R@5, then MRR@10."""
    from trellis.context.search.service import fuse, fuse_documents

    depth = min(max(2 * FETCH, 50), 200)
    lists: list[tuple[dict[str, Any], dict[str, list[tuple[str, float]]], dict[str, str]]] = []
    for q in questions:
        ranked: dict[str, list[tuple[str, float]]] = {}
        sources: dict[str, str] = {}
        for mode in ("keyword", "semantic"):
            params = {"query": q["question"], "mode": mode, "limit": min(depth, 100)}
            response = await client.get("/api/context/search", params=params, headers=headers)
            items = response.json()["data"]["items"]
            ranked[mode] = [(item["context"]["id"], item["score"]) for item in items]
            sources.update({item["context"]["id"]: item["context"]["source"] for item in items})
        lists.append((q, ranked, sources))
    results: list[dict[str, Any]] = []
    for k in (1, 5, 10, 20, 30, 60, 100):
        for kw in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
            for decay in (0.0, 0.25, 0.5, 0.75):
                rows = []
                for q, ranked, sources in lists:
                    order = fuse(ranked, k=k, weights={"keyword": kw, "semantic": 1.0})  # type: ignore[dict-item]
                    docs = fuse_documents(order, sources, decay=decay)
                    rows.append(score([key for key, _, _ in docs], q["relevant"]))
                mean = {m: round(statistics.fmean(r[m] for r in rows), 3) for m in rows[0]}
                results.append({"k": k, "keyword_weight": kw, "decay": decay, **mean})
    results.sort(key=lambda r: (-r["R@5"], -r["MRR@10"], -r["R@1"]))
    print(f"\ntuning on {len(questions)} dev questions (group=document): best by R@5, then MRR@10")
    for r in results[:12]:
        print(
            f"  k={r['k']:<4} keyword_weight={r['keyword_weight']:<5} decay={r['decay']:<5} "
            f"R@1={r['R@1']:.3f} R@5={r['R@5']:.3f} R@10={r['R@10']:.3f} MRR@10={r['MRR@10']:.3f}"
        )
    default = next(r for r in results if r["k"] == 60 and r["keyword_weight"] == 1.0 and r["decay"] == 0.5)
    print(f"  (k=60 keyword_weight=1.0 decay=0.5: R@5={default['R@5']:.3f} MRR@10={default['MRR@10']:.3f})")
    return results


def blend(fused: Sequence[str], reranked: dict[str, float], depth: int, weight: float) -> list[str]:
    """The fused order with its best ``depth`` reordered as the service does (``blend_rerank``)."""
    from trellis.context.search.service import blend_rerank

    head = [cid for cid in fused[:depth] if cid in reranked]
    order = blend_rerank(head, reranked, fused_weight=weight)
    return order + [cid for cid in fused if cid not in set(head)]


async def tune_rerank(
    client: Any, headers: dict[str, str], questions: Sequence[dict[str, Any]], depth: int
) -> list[dict[str, Any]]:
    """How deep to rerank and how much of the fused order to keep (``rerank_fused_weight``), tried on the
    dev questions only: each question is asked once fused and once reranked to ``[context] rerank_depth``
    (run with a large one, e.g. 50); shallower depths and blends are computed here from those scores (a
    pair's score does not depend on the other candidates). Prints the best few by R@5, then MRR@10, per
    grouping."""
    from trellis.context.search.service import fuse_documents

    rows: list[tuple[dict[str, Any], list[str], dict[str, float], dict[str, str]]] = []
    for q in questions:
        params = {"query": q["question"], "mode": "hybrid", "limit": 100}
        fused_items = (await client.get("/api/context/search", params=params, headers=headers)).json()["data"]["items"]
        data = (await client.get("/api/context/search", params={**params, "rerank": "true"}, headers=headers)).json()
        scores = {i["context"]["id"]: i["rerank_score"] for i in data["data"]["items"] if i["rerank_score"] is not None}
        sources = {i["context"]["id"]: i["context"]["source"] for i in fused_items}
        rows.append((q, [i["context"]["id"] for i in fused_items], scores, sources))
    results: list[dict[str, Any]] = []
    for d in sorted({5, 10, 15, 20, 30, 40, 50, depth}):
        if d > depth:
            continue
        for weight in (0.0, 0.5, 1.0, 2.0, 4.0):
            for group in ("context", "document"):
                scored = []
                for q, fused, scores, sources in rows:
                    order = blend(fused, scores, d, weight)
                    if group == "context":
                        ranking = document_ranking([{"context": {"source": sources[c]}} for c in order])
                    else:
                        ranked = [(c, 1.0 / (20 + r)) for r, c in enumerate(order, start=1)]
                        ranking = [key for key, _, _ in fuse_documents(ranked, sources, decay=0.5)]
                    scored.append(score(ranking, q["relevant"]))
                mean = {m: round(statistics.fmean(r[m] for r in scored), 3) for m in scored[0]}
                para = [r for (q, *_), r in zip(rows, scored, strict=True) if q["kind"] == "paraphrase"]
                mean["para_R@5"] = round(statistics.fmean(r["R@5"] for r in para), 3)
                results.append({"depth": d, "fused_weight": weight, "group": group, **mean})
    for group in ("context", "document"):
        print(f"\nrerank tuning on {len(questions)} dev questions, group={group}: best by R@5, then MRR@10")
        ranked_results = sorted(
            (r for r in results if r["group"] == group), key=lambda r: (-r["R@5"], -r["MRR@10"], -r["R@1"])
        )
        for r in ranked_results[:10]:
            print(
                f"  depth={r['depth']:<3} fused_weight={r['fused_weight']:<4} R@1={r['R@1']:.3f} R@5={r['R@5']:.3f} "
                f"R@10={r['R@10']:.3f} MRR@10={r['MRR@10']:.3f} paraphrase R@5={r['para_R@5']:.3f}"
            )
        for r in results:
            if r["group"] == group and r["depth"] == 20 and r["fused_weight"] == 1.0:
                print(f"  (the default, depth=20 fused_weight=1.0: R@5={r['R@5']:.3f} MRR@10={r['MRR@10']:.3f})")
    return results


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\n{report['questions']} questions (split {report['split']}), {report['documents']} documents, "
        f"{report['contexts']} contexts"
    )
    print(
        f"{'mode':13} {'kind':15} {'n':>3} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR@10':>7}   latency p50/p95 ms"
        "   (+rr: of which reranking p50/p95)"
    )
    splits = ["", "dev:", "test:"] if report["split"] == "all" else [""]
    for prefix in splits:
        if prefix:
            print(f"-- {prefix[:-1]} split only")
        _print_rows(report, prefix)


def _print_rows(report: dict[str, Any], prefix: str) -> None:
    for mode, result in report["modes"].items():
        for kind in ("all", *KINDS):
            m = result["metrics"].get(prefix + kind)
            if m is None:
                continue
            timing = result["latency_ms"]
            lat = f"   {timing['p50']}/{timing['p95']}" if kind == "all" and not prefix else ""
            if lat and "rerank_ms" in result:
                lat += f"   ({result['rerank_ms']['p50']}/{result['rerank_ms']['p95']})"
            print(
                f"{mode:9} {kind:15} {m['n']:>3} {m['R@1']:6.3f} {m['R@5']:6.3f} {m['R@10']:6.3f} "
                f"{m['MRR@10']:7.3f}{lat}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("dev", "test", "all"), default="all")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--postgres", help="a PostgreSQL URL allowed to create databases (default: SQLite)")
    parser.add_argument("--settings", help="JSON of Settings overrides, e.g. '{\"context\": {...}}'")
    parser.add_argument("--params", help="JSON of extra search query parameters")
    parser.add_argument(
        "--embed-model",
        default="minilm-l6",
        help="the embedding model the fresh store starts with (a configured name: minilm-l6, bge-small-en)",
    )
    parser.add_argument(
        "--groups",
        nargs="+",
        choices=("context", "document"),
        default=["context"],
        help="ask for a hit per context (the default) and/or per document (group=document, shown as MODE/doc)",
    )
    parser.add_argument("--tune", action="store_true", help="also try fusion parameters on the dev split")
    parser.add_argument(
        "--tune-rerank",
        action="store_true",
        help="also try rerank depths and blends with the fused order on the dev split (set a large "
        "rerank_depth with --settings)",
    )
    parser.add_argument(
        "--rerank", action="store_true", help="ask every mode also with rerank=true (rows MODE+rr), same run"
    )
    parser.add_argument("--misses", action="store_true", help="print the questions missed at 5")
    parser.add_argument("--label", default="", help="a name for this run in the saved JSON")
    args = parser.parse_args()
    os.environ.setdefault("TRELLIS_LOG_LEVEL", "WARNING")
    report = asyncio.run(run(args))
    report["label"] = args.label
    report["settings"] = args.settings
    report["embed_model"] = args.embed_model
    report["params"] = args.params
    print_report(report)
    reranked = {mode: result for mode, result in report["modes"].items() if "rerank_ms" in result}
    for mode, result in reranked.items():
        base = report["modes"][mode.removesuffix("+rr")]["latency_ms"]
        timing, own = result["latency_ms"], result["rerank_ms"]
        print(
            f"{mode}: request p50 {base['p50']} -> {timing['p50']} ms, p95 {base['p95']} -> {timing['p95']} ms; "
            f"the reranker itself p50 {own['p50']} ms, p95 {own['p95']} ms (first query, model load included: "
            f"{own['first']} ms)"
        )
    if args.misses:
        for mode, result in report["modes"].items():
            for miss in result["misses"]:
                print(f"{mode:9} {miss['id']} {miss['kind']:15} top5={miss['top5']} want={miss['relevant']}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"retrieval_quality-{stamp}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {path.relative_to(RESULTS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
