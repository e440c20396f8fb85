"""Migration 0013 (titles in full-text search) goes down and up again on a store with data: the
full-text index is rebuilt each way, so content stays searchable throughout and titles are
searchable exactly when 0013 is applied."""

from __future__ import annotations

from tests.auth.support import assert_ok
from tests.conftest import Harness
from tests.storage.migrations import migrate_to

DOCUMENT = "# Orchard\n\n## Pruning\n\nCut back the apple trees in late winter.\n"


async def _keyword(h: Harness, who: dict[str, str], query: str) -> list[str]:
    data = assert_ok(await h.client.get("/api/context/search", params={"query": query, "mode": "keyword"}, headers=who))
    return [hit["context"]["source"] for hit in data["items"]]


async def test_down_and_up_again_keeps_the_index_whole(h: Harness, alice: dict[str, str]) -> None:
    parts = [("files", ("notes/orchard_care.md", DOCUMENT.encode(), "text/markdown"))]
    assert_ok(await h.client.post("/api/context/ingest", files=parts, headers=alice))
    assert "notes/orchard_care.md" in await _keyword(h, alice, "orchard_care")  # a file name: a title

    await migrate_to(h, "0012", down=True)
    assert await _keyword(h, alice, "apple trees")  # content: still indexed after the rebuild
    assert await _keyword(h, alice, "orchard_care") == []  # titles are not, before 0013

    await migrate_to(h, "head", down=False)
    assert "notes/orchard_care.md" in await _keyword(h, alice, "orchard_care")
    assert await _keyword(h, alice, "apple trees")
