"""How much faster is the local embedding model with dynamic int8 quantization, and how close are its vectors?

Runs the built-in embedding model (``all-MiniLM-L6-v2-int8`` on the ``onnx-embed`` provider) both
ways in one process, rounds interleaved so both see the same machine:

* ``none``: the ONNX file as it is (int8 weights folded back to fp32 by onnxruntime, fp32 products);
* ``dynamic``: the default, the file quantized by ``trellis.gateway.providers.onnx_quantize``
  (``MatMulInteger``: int8 weights, activations quantized per call).

and prints, per mode:

* **query latency**: p50/p95 of embedding one search query (the benchmark corpus's seeded queries,
  2-12 words), one call each, as ``ContextSearch`` does for every semantic or hybrid search;
* **document throughput**: texts per second for the corpus's paragraphs (300-800 characters), in
  calls of 64 texts, batched 32 at a time by the provider, as the context indexer sends them;
* **agreement**: the cosine between the two modes' vectors of the same text (min / mean), for
  queries and for documents;
* **quantization time**: how long making the quantized model takes (once per model file and
  onnxruntime version; cached in ``<data_dir>/cache/onnx`` afterwards).

    .venv/bin/python bench/embedding_compute.py            # ~2 minutes
    .venv/bin/python bench/embedding_compute.py --quick    # ~30 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from _common import cpu_model, git_revision, percentile, render_table, write_results
from _context_corpus import generate_corpus, generate_queries

MODES = ("none", "dynamic")


@dataclass
class ModeResult:
    mode: str
    query_ms: list[float] = field(default_factory=list)
    doc_seconds: float = 0.0
    docs: int = 0
    query_vectors: list[np.ndarray[Any, Any]] = field(default_factory=list, repr=False)
    doc_vectors: list[np.ndarray[Any, Any]] = field(default_factory=list, repr=False)

    @property
    def docs_per_second(self) -> float:
        return self.docs / self.doc_seconds if self.doc_seconds else float("nan")


def _model(mode: str) -> Any:
    from trellis.settings.gateway import DEFAULT_EMBED_MODEL, default_models

    packaged = default_models()[DEFAULT_EMBED_MODEL]
    return packaged.model_copy(update={"options": {**packaged.options, "quantize": mode}})


def quantization_seconds() -> float:
    """One conversion of the packaged file, timed (the provider would take it from its caches)."""
    from trellis.gateway.providers import onnx_embed, onnx_quantize

    source = onnx_embed.packaged_model_file()
    started = time.perf_counter()
    onnx_quantize.quantize(source)
    return time.perf_counter() - started


async def measure(args: argparse.Namespace) -> tuple[dict[str, ModeResult], float]:
    from trellis.gateway.providers.base import ProviderContext
    from trellis.gateway.providers.onnx_embed import OnnxEmbeddingProvider
    from trellis.settings import Settings

    corpus = generate_corpus(args.docs, args.seed)
    queries = generate_queries(args.queries + args.warmup, args.seed)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-embed-") as data_dir:
        provider = OnnxEmbeddingProvider(ProviderContext(Settings(data_dir=Path(data_dir))))
        models = {mode: _model(mode) for mode in MODES}
        results = {mode: ModeResult(mode) for mode in MODES}
        convert_s = quantization_seconds()
        for mode in MODES:  # load both, and warm them up, before measuring
            for text in queries[: args.warmup]:
                await provider.embed(models[mode], [text])
            await provider.embed(models[mode], corpus.texts[: args.call])
        measured = queries[args.warmup :]
        for start in range(0, len(measured), args.round):
            for mode in MODES if (start // args.round) % 2 == 0 else reversed(MODES):
                for text in measured[start : start + args.round]:
                    began = time.perf_counter()
                    embedded = await provider.embed(models[mode], [text])
                    results[mode].query_ms.append((time.perf_counter() - began) * 1000)
                    results[mode].query_vectors.append(np.asarray(embedded.vectors[0], dtype=np.float32))
        for number, start in enumerate(range(0, len(corpus.texts), args.call)):
            texts = corpus.texts[start : start + args.call]
            for mode in MODES if number % 2 == 0 else reversed(MODES):
                began = time.perf_counter()
                embedded = await provider.embed(models[mode], texts)
                results[mode].doc_seconds += time.perf_counter() - began
                results[mode].docs += len(texts)
                results[mode].doc_vectors.append(np.asarray(embedded.vectors, dtype=np.float32))
        await provider.aclose()
    return results, convert_s


def agreement(a: Sequence[np.ndarray[Any, Any]], b: Sequence[np.ndarray[Any, Any]]) -> tuple[float, float]:
    left, right = np.vstack(a), np.vstack(b)
    cosines = (left * right).sum(axis=1)  # both unit-normalised
    return float(cosines.min()), float(cosines.mean())


def render(results: dict[str, ModeResult], convert_s: float) -> tuple[str, dict[str, Any]]:
    base, quick = results["none"], results["dynamic"]
    table: list[tuple[str, ...]] = []
    numbers: dict[str, Any] = {}
    for mode, result in results.items():
        p50, p95 = percentile(result.query_ms, 50), percentile(result.query_ms, 95)
        table.append((mode, f"{p50:.2f}", f"{p95:.2f}", f"{result.docs_per_second:.1f}"))
        numbers[mode] = {"query_p50_ms": p50, "query_p95_ms": p95, "docs_per_s": result.docs_per_second}
    rows = [render_table(("mode", "query p50 ms", "query p95 ms", "docs/s"), table)]
    q_min, q_mean = agreement(base.query_vectors, quick.query_vectors)
    d_min, d_mean = agreement(base.doc_vectors, quick.doc_vectors)
    speed_q = percentile(base.query_ms, 50) / percentile(quick.query_ms, 50)
    speed_d = quick.docs_per_second / base.docs_per_second
    rows += [
        "",
        f"dynamic against none: query p50 {speed_q:.2f}x as fast, documents {speed_d:.2f}x the rate",
        f"cosine(dynamic, none) of the same text: queries min {q_min:.4f} mean {q_mean:.4f}; "
        f"documents min {d_min:.4f} mean {d_mean:.4f}",
        f"quantizing the model once: {convert_s:.2f} s; peak RSS of this process "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
        f"({len(base.query_ms)} queries and {base.docs} documents per mode; threads: onnxruntime's default; "
        f"{os.cpu_count()} CPUs, {cpu_model()})",
    ]
    numbers |= {
        "query_speedup_p50": speed_q,
        "docs_speedup": speed_d,
        "cosine_queries": {"min": q_min, "mean": q_mean},
        "cosine_documents": {"min": d_min, "mean": d_mean},
        "quantize_seconds": convert_s,
    }
    return "\n".join(rows), numbers


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 queries and 512 documents per mode")
    parser.add_argument("--queries", type=int, default=1000, help="measured queries per mode (default 1000)")
    parser.add_argument("--docs", type=int, default=2048, help="documents per mode (default 2048)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured queries per mode first")
    parser.add_argument("--call", type=int, default=64, help="documents per embed call (default 64)")
    parser.add_argument("--round", type=int, default=50, help="queries per mode before switching (default 50)")
    parser.add_argument("--seed", type=int, default=7, help="corpus and query seed")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/embedding_compute-*.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.docs = 200, 512
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    results, convert_s = asyncio.run(measure(args))
    text, numbers = render(results, convert_s)
    print(text)
    if not args.no_json:
        meta = {
            "started": started.isoformat(),
            "revision": git_revision(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "args": vars(args),
        }
        raw = {m: {"query_ms": r.query_ms, "docs": r.docs, "doc_seconds": r.doc_seconds} for m, r in results.items()}
        path = write_results("embedding_compute", started, {"meta": meta, "results": numbers, "raw": raw})
        print(f"results saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
