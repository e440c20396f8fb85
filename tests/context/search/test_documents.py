"""Search over ingested documents: titles (file name, heading path) are searchable, hits explain
themselves (document, heading path, passage), and ``group=document`` answers per document with its
chunks' scores fused. On SQLite (FTS5 over ``context_search_text``, migration 0013) and PostgreSQL
(the redefined ``search_vector``), embedded for real by the local model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.auth.support import assert_error, assert_ok
from tests.conftest import Harness
from trellis.context.index.repository import embedding_text, heading_label
from trellis.context.search.service import fuse, fuse_documents

SEARCH = "/api/context/search"
INGEST = "/api/context/ingest"

# Two near-identical READMEs (as httpcore and its fork), and a guide whose section headings carry words
# its body never uses.
FILES = {
    "docs/kettle.md": "# Kettle\n\nKettle boils water quickly.\n\n## Install\n\nRun the installer and wait.\n",
    "docs/kettle2.md": "# Kettle 2\n\nKettle 2 boils water quickly.\n\n## Install\n\nRun the installer and wait.\n",
    "guides/garden.md": (
        "# Garden\n\nNotes on the garden.\n\n"
        "## Watering schedule\n\nEvery morning before nine, a full can for each bed.\n\n"
        "## Compost\n\nTurn the heap weekly; keep it damp.\n\n"
        "## Tomatoes\n\nTomatoes need a cane and a feed each week; pinch out side shoots.\n"
    ),
    "notes/nnapi_supported_ops.md": "# Operators\n\n| Op | Note |\n|---|---|\n| Add | yes |\n| Conv | yes |\n",
}


async def ingest(h: Harness, who: dict[str, str], files: dict[str, str]) -> dict[str, str]:
    parts = [("files", (name, body.encode(), "text/markdown")) for name, body in files.items()]
    data = assert_ok(await h.client.post(INGEST, files=parts, headers=who))
    await h.runtime.indexer.wait_idle()
    return {item["source"]: item["document_id"] for item in data["files"]}


async def search(h: Harness, who: dict[str, str], query: str, **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(await h.client.get(SEARCH, params={"query": query, **params}, headers=who))
    return data


async def test_a_file_name_and_a_heading_are_searchable(h: Harness, alice: dict[str, str]) -> None:
    await ingest(h, alice, FILES)
    # The file's name is in no content: only its title makes it findable by keyword.
    found = await search(h, alice, "nnapi_supported_ops.md", mode="keyword", limit=5)
    sources = [hit["context"]["source"] for hit in found["items"]]
    # Its document and its chunk first; then other files, by the word "md" alone.
    assert sources[:2] == ["notes/nnapi_supported_ops.md"] * 2, sources
    assert "notes/nnapi_supported_ops.md" not in sources[2:]
    # "Watering schedule" is a heading; the chunk under it never says either word.
    found = await search(h, alice, "watering schedule", mode="keyword", limit=5)
    chunks = [hit for hit in found["items"] if hit["context"]["type"] == "chunk"]
    assert chunks[0]["heading_path"] == ["Garden", "Watering schedule"]
    assert "morning before nine" in chunks[0]["context"]["content"]


async def test_titles_follow_updates_and_deletes(h: Harness, alice: dict[str, str]) -> None:
    ids = await ingest(h, alice, {"notes/alpha_beta.md": "# Apricot\n\n## Plum\n\nfirst text\n"})
    assert (await search(h, alice, "alpha_beta", mode="keyword"))["items"]
    assert (await search(h, alice, "plum", mode="keyword"))["items"]
    # Re-ingested with new headings: the old heading's words are gone from the index, the new ones there.
    await ingest(h, alice, {"notes/alpha_beta.md": "# Gamma\n\n## Damson\n\nsecond text\n"})
    assert (await search(h, alice, "damson", mode="keyword"))["items"]
    assert (await search(h, alice, "plum", mode="keyword"))["items"] == []
    assert_ok(await h.client.delete(f"/api/context/{ids['notes/alpha_beta.md']}", headers=alice))
    remaining = (await search(h, alice, "alpha_beta", mode="keyword"))["items"]
    assert ids["notes/alpha_beta.md"] not in {hit["context"]["id"] for hit in remaining}
    if h.runtime.database.dialect == "sqlite":
        async with h.runtime.database.transaction() as session:
            # FTS5 checks its index against the view it indexes: a trigger that wrote another title
            # than the view computes (or missed a delete) fails here.
            await session.execute(text("INSERT INTO contexts_fts(contexts_fts) VALUES ('integrity-check')"))


async def test_hits_explain_themselves(h: Harness, alice: dict[str, str]) -> None:
    ids = await ingest(h, alice, FILES)
    result = await search(h, alice, "tomatoes cane feed", limit=10, passages="true")
    top = result["items"][0]
    assert top["context"]["source"] == "guides/garden.md"
    assert top["document"] == {"source": "guides/garden.md", "id": ids["guides/garden.md"]}
    assert set(top["retrievers"]) <= {"keyword", "semantic"}
    assert top["retrievers"]
    assert top["score"] > 0
    for hit in result["items"]:
        if hit["context"]["type"] == "chunk":
            assert hit["heading_path"] == hit["context"]["metadata"]["heading_path"]
            assert hit["passage"] == hit["context"]["content"]
        else:  # the whole document: its best chunk is the passage
            assert hit["heading_path"] is None
            assert hit["document"]["id"] == hit["context"]["id"]
            if hit["context"]["source"] == "guides/garden.md":
                assert "Tomatoes need a cane" in hit["passage"]
    # Without passages=true there is none.
    assert all(hit["passage"] is None for hit in (await search(h, alice, "tomatoes"))["items"])


async def test_group_by_document(h: Harness, alice: dict[str, str]) -> None:
    ids = await ingest(h, alice, FILES)
    for mode in ("keyword", "semantic", "hybrid"):
        result = await search(h, alice, "kettle 2 install", mode=mode, group="document", limit=10, passages="true")
        assert result["group"] == "document"
        sources = [hit["context"]["source"] for hit in result["items"]]
        assert len(sources) == len(set(sources)), sources  # one hit per document
        assert sources[0] == "docs/kettle2.md", (mode, sources)
        top = result["items"][0]
        assert top["document"]["id"] == ids["docs/kettle2.md"]
        assert top["matches"] >= 2  # the document and its chunks
        scores = [hit["score"] for hit in result["items"]]
        assert scores == sorted(scores, reverse=True)
    limited = await search(h, alice, "water", group="document", limit=1)
    assert len(limited["items"]) == 1


async def test_bad_group_is_a_400_naming_it(h: Harness, alice: dict[str, str]) -> None:
    response = await h.client.get(SEARCH, params={"query": "x", "group": "chapter"}, headers=alice)
    assert_error(response, 400, "validation_error")
    assert "group" in response.text


def test_embedding_text_carries_the_title() -> None:
    meta = {"heading_path": ["Kettle 2", "Install"], "index": 1}
    assert heading_label("docs/kettle2.md", meta) == "docs/kettle2.md > Kettle 2 > Install"
    assert embedding_text("Run it.", "docs/kettle2.md", meta) == "docs/kettle2.md > Kettle 2 > Install\n\nRun it."
    assert embedding_text("def f(): ...", "a.py", {"definition": "f"}) == "a.py > f\n\ndef f(): ..."
    assert embedding_text("a note", None, {}) == "a note"  # not ingested: as it is


def test_weighted_fusion() -> None:
    ranked: dict[Any, list[tuple[str, float]]] = {"keyword": [("a", 9.0), ("b", 8.0)], "semantic": [("b", 0.9)]}
    assert fuse(ranked, k=10) == [("b", pytest.approx(1 / 12 + 1 / 11)), ("a", pytest.approx(1 / 11))]
    weighted = fuse(ranked, k=10, weights={"keyword": 3.0, "semantic": 0.1})
    assert [cid for cid, _ in weighted] == ["a", "b"]
    assert weighted[0][1] == pytest.approx(3 / 11)


def test_document_fusion_lifts_a_document_with_several_good_chunks() -> None:
    order = [("x1", 1.0), ("y1", 0.9), ("y2", 0.8), ("y3", 0.7), ("y4", 0.6), ("z", 0.5)]
    keys = {"x1": "X", "y1": "Y", "y2": "Y", "y3": "Y", "y4": "Y"}
    documents = fuse_documents(order, keys, decay=0.5)
    assert [key for key, _, _ in documents] == ["Y", "X", "z"]  # z has no document: it is its own
    assert documents[0][1] == ["y1", "y2", "y3", "y4"]
    assert documents[0][2] == pytest.approx(0.9 + 0.4 + 0.175)  # the best three only
    # With decay 0 only the best chunk counts: X's single better chunk wins.
    assert [key for key, _, _ in fuse_documents(order, keys, decay=0.0)] == ["X", "Y", "z"]


def test_cli_search_per_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli.test_commands import cli
    from tests.conftest import bootstrap

    monkeypatch.setenv("TRELLIS_DATA_DIR", str(tmp_path / "data"))
    bootstrap()
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "garden.md").write_text(FILES["guides/garden.md"])
    (folder / "kettle2.md").write_text(FILES["docs/kettle2.md"])
    result = cli("context", "ingest", str(folder / "garden.md"), str(folder / "kettle2.md"))
    assert result.exit_code == 0, result.output

    result = cli("context", "search", "tomatoes cane", "--group", "document", "--passages", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["group"] == "document"
    sources = [hit["document"]["source"] for hit in data["items"]]
    assert sources[0].endswith("garden.md")
    assert len(sources) == len(set(sources))
    assert "Tomatoes need a cane" in data["items"][0]["passage"]

    result = cli("context", "search", "tomatoes cane", "--group", "chapter")
    assert result.exit_code == 1
    assert "group" in result.output
