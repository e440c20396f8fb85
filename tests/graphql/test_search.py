"""``searchContexts`` answers what ``GET /api/context/search`` answers, document grouping, passages and
the cross-encoder's rerank included (the real MiniLM embedder and the packaged cross-encoder), on
SQLite and PostgreSQL; a bad value is the same 400 as REST's, in ``extensions``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.auth.support import assert_ok
from tests.context.search.test_rerank import ANSWER, DECOY, QUESTION
from tests.graphql.support import data_of, error_of, field_entries, gql

SEARCH = """query($q: String!, $group: SearchGrouping!, $rerank: Boolean!) {
  searchContexts(query: $q, group: $group, passages: true, rerank: $rerank, limit: 5) {
    query group
    rerank { applied model candidates reason }
    items {
      context { id } score matches passage rerankScore headingPath
      document { source id }
      keyword { rank } semantic { rank }
    }
  }
}"""
FILES = {
    "docs/decoy.md": f"# Archive\n\n{DECOY}\n",
    "docs/answer.md": f"# Residents\n\n{ANSWER}\n",
    "docs/kettle.md": "# Kettle\n\nKettle boils water quickly.\n",
}


def rest_view(hit: dict[str, Any]) -> dict[str, Any]:
    retrievers = hit["retrievers"]
    return {
        "id": hit["context"]["id"],
        "score": hit["score"],
        "matches": hit["matches"],
        "passage": hit["passage"],
        "rerank_score": hit["rerank_score"],
        "heading_path": hit["heading_path"],
        "document": hit["document"],
        "keyword": retrievers["keyword"]["rank"] if "keyword" in retrievers else None,
        "semantic": retrievers["semantic"]["rank"] if "semantic" in retrievers else None,
    }


def graphql_view(hit: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": hit["context"]["id"],
        "score": hit["score"],
        "matches": hit["matches"],
        "passage": hit["passage"],
        "rerank_score": hit["rerankScore"],
        "heading_path": hit["headingPath"],
        "document": hit["document"],
        "keyword": hit["keyword"]["rank"] if hit["keyword"] else None,
        "semantic": hit["semantic"]["rank"] if hit["semantic"] else None,
    }


async def test_search_contexts_answers_as_rest_does(make_harness: Callable[..., Any], database_url: str) -> None:
    # The cross-encoder's order alone (as tests/context/search/test_rerank.py): the answer goes first.
    async with make_harness(database_url=database_url, context={"rerank_fused_weight": 0.0}) as h:
        alice = h.auth((await h.user_with_key("alice"))[1])
        parts = [("files", (name, body.encode(), "text/markdown")) for name, body in FILES.items()]
        assert_ok(await h.client.post("/api/context/ingest", files=parts, headers=alice))
        await h.runtime.indexer.wait_idle()
        for group, rerank in (("document", True), ("context", False)):
            rest = assert_ok(
                await h.client.get(
                    "/api/context/search",
                    params={
                        "query": QUESTION,
                        "group": group,
                        "passages": "true",
                        "rerank": str(rerank).lower(),
                        "limit": 5,
                    },
                    headers=alice,
                )
            )
            answer = data_of(
                await gql(h, SEARCH, {"q": QUESTION, "group": group.upper(), "rerank": rerank}, headers=alice)
            )["searchContexts"]
            assert answer["group"] == group.upper()
            assert [graphql_view(hit) for hit in answer["items"]] == [rest_view(hit) for hit in rest["items"]]
            if rerank:
                assert answer["rerank"]["applied"] is True
                assert answer["rerank"]["candidates"] == rest["rerank"]["candidates"] > 0
                top = answer["items"][0]
                assert top["document"]["source"] == "docs/answer.md"
                assert ANSWER in top["passage"]
                assert top["rerankScore"] is not None
            else:
                assert answer["rerank"] is None
                assert all(hit["rerankScore"] is None for hit in answer["items"])
                assert ["Residents"] in [hit["headingPath"] for hit in answer["items"]]  # a chunk's place


async def test_a_bad_group_or_limit_is_refused_as_rest_refuses_it(
    make_harness: Callable[..., Any], database_url: str
) -> None:
    async with make_harness(database_url=database_url) as h:
        alice = h.auth((await h.user_with_key("alice"))[1])
        wrong = await gql(h, '{ searchContexts(query: "x", group: PARAGRAPH) { query } }', headers=alice)
        assert "PARAGRAPH" in str(wrong["errors"])  # not a value of the enum: refused before any resolver
        over = await gql(h, '{ searchContexts(query: "x", limit: 0, rerank: true) { query } }', headers=alice)
        assert field_entries(error_of(over, "validation_error")) == [("limit", "value_error")]
