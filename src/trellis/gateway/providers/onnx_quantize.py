"""Dynamic int8 quantization of an ONNX encoder, done once per model file and kept on disk.

The packaged MiniLM file stores its weights as int8 with a scale, but as ``Cast`` and ``Mul`` before
each ``MatMul``: onnxruntime folds them back to fp32 at load and multiplies in fp32, so the int8 only
saves disk. Dynamic quantization (onnxruntime's ``quantize_dynamic``) rewrites each ``MatMul`` with a
constant weight into ``DynamicQuantizeLinear`` + ``MatMulInteger``: weights int8 per output channel,
activations quantized per call. onnxruntime's integer kernels (AVX2, and AVX-512 VNNI where the CPU
has it) read a quarter of the weight bytes. On the machine measured (bench/README.md, "Embedding
compute") a search query embeds in about half the time and documents at about twice the rate;
vectors keep a cosine of about 0.99 to the fp32 computation (tests/gateway/providers/test_onnx_embed.py
holds the bounds).

The recipe is onnxruntime's own, so nothing numerical is hand-written here: this module only
orders its steps and caches the result.

1. onnxruntime at ``ORT_ENABLE_BASIC`` (constant folding only, nothing tied to this CPU) writes the
   graph with its weights folded to fp32 initializers: ``quantize_dynamic`` only quantizes a
   ``MatMul`` whose weight is an initializer.
2. ``quantize_dynamic`` (weights ``QInt8``, per channel) writes the integer model.

It takes a second or two and several hundred MB at its peak, so the result is kept: in this process (by the
source file's content hash) and, when the provider knows Trellis's data directory, in
``<data_dir>/cache/onnx/`` so the next process loads it in tens of milliseconds. The cache key also
holds the onnxruntime and onnx versions and :data:`RECIPE`, so an upgrade makes a fresh file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from trellis.kit.logging import get_logger

log = get_logger(__name__)

# Bump when the steps or their options change: cached files of the old recipe are then ignored.
RECIPE = "dynamic-qint8-per-channel-1"

_lock = threading.Lock()
_in_process: dict[str, bytes] = {}


class _DropPreprocessAdvice(logging.Filter):
    """``quantize_dynamic`` logs advice to run its shape-inference pre-processing (for static
    quantization of vision models) on the root logger, on every call; it changes nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def cache_key(source: Path) -> str:
    """What the quantized model depends on: the source bytes, the tools' versions and the recipe."""
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"|{ort.__version__}|{onnx.__version__}|{RECIPE}".encode())
    return digest.hexdigest()[:24]


def quantized_model(source: Path, cache_dir: Path | None, *, remake: bool = False) -> bytes:
    """The dynamically quantized form of the ONNX model at ``source``, as bytes for
    ``onnxruntime.InferenceSession``: from this process's memory, else ``cache_dir``, else made now
    (and then written to ``cache_dir`` when it is given). ``remake`` skips both caches and replaces
    them: for when onnxruntime could not load what they held (a damaged file)."""
    key = cache_key(source)
    with _lock:  # one conversion at a time: each briefly needs several hundred MB
        model = None if remake else _in_process.get(key)
        if model is not None:
            return model
        cached = cache_dir / f"{source.stem}-{key}.onnx" if cache_dir is not None else None
        if cached is not None and cached.is_file() and not remake:
            model = cached.read_bytes()
        else:
            model = quantize(source)
            if cached is not None:
                try:
                    _write_atomically(cached, model)
                except OSError as exc:  # a read-only or full disk costs the next process a conversion
                    log.warning("onnx_quantized_cache_unwritable", path=str(cached), error=str(exc))
        _in_process[key] = model
        return model


def quantize(source: Path) -> bytes:
    """One dynamic int8 quantization of the ONNX model at ``source``, uncached (``quantized_model``
    is the cached way; benchmarks time this)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="trellis-onnx-") as scratch:
        folded = Path(scratch) / "folded.onnx"
        quantized = Path(scratch) / "quantized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
        advice = _DropPreprocessAdvice()
        logging.getLogger().addFilter(advice)
        try:
            quantize_dynamic(folded, quantized, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.getLogger().removeFilter(advice)
        return quantized.read_bytes()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that another process sees the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["RECIPE", "cache_key", "quantize", "quantized_model"]
