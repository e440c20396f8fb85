"""Documentation retrieval in three stages, over the caller's context store.

1. ``documentation_query``: a model rewrites the question as a search query (the original is kept
   when the rewrite is empty or drifts into something unsearchable).
2. ``documentation_retrieval``: hybrid search (keyword + semantic, RRF) over the caller's contexts,
   with type filters, plus the contexts their ``part_of`` / other relationships point to, each with
   its relevance score and how it was found. No model call.
3. ``context_synthesis``: a model answers from the given contexts and cites them by id. Citations
   are checked against the contexts it was given (loaded again from the store as the caller: ids
   that do not exist or are someone else's are dropped before the model sees anything); an id the
   model invents is removed and reported in ``rejected_citations``. With no context to answer
   from, it says so without calling a model.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import dspy

from trellis.context.search.schemas import SearchMode, SearchQuery
from trellis.dspy.modules.base import TrellisModule

SNIPPET_CHARS = 1200
NO_SOURCES = "No stored context answers this question."
_ID = re.compile(r"\bctx_[A-Za-z0-9_\-]+")


class DocumentationQuerySignature(dspy.Signature):  # type: ignore[misc]
    """Rewrite the developer's question as a short keyword search query for project documentation."""

    query: str = dspy.InputField(desc="the developer's question")
    context: str = dspy.InputField(desc="what the developer is working on")
    role: str = dspy.InputField(desc="the developer's role")
    processed_query: str = dspy.OutputField(desc="a few search keywords")


class DocumentationQueryInterface(dspy.Signature):  # type: ignore[misc]
    """Turn a question into a search query."""

    query: str = dspy.InputField()
    context: str = dspy.InputField(default="current development session")
    role: str = dspy.InputField(default="developer")
    processed_query: str = dspy.OutputField()
    original_query: str = dspy.OutputField()


class DocumentationRetrievalInterface(dspy.Signature):  # type: ignore[misc]
    """Find the caller's contexts relevant to a query, with relevance scores."""

    query: str = dspy.InputField()
    types: list[str] = dspy.InputField(default=[], desc="context types to search (empty: all)")
    limit: int = dspy.InputField(default=5, desc="hits from search, 1-20")
    follow_relationships: bool = dspy.InputField(default=True, desc="add the contexts hits are related to")
    documents: list[dict[str, Any]] = dspy.OutputField(desc="[{id, type, score, found_by, content}]")


class ContextSynthesisSignature(dspy.Signature):  # type: ignore[misc]
    """Answer the question using only the numbered sources. Cite the ids of the sources you used."""

    question: str = dspy.InputField()
    sources: str = dspy.InputField(desc="sources, each starting with its id in brackets")
    synthesis_goal: str = dspy.InputField()
    answer: str = dspy.OutputField()
    citations: list[str] = dspy.OutputField(desc="ids of the sources used, e.g. ctx_...")


class ContextSynthesisInterface(dspy.Signature):  # type: ignore[misc]
    """Answer from the given contexts, citing them by id."""

    question: str = dspy.InputField()
    context_ids: list[str] = dspy.InputField(desc="the contexts to answer from")
    synthesis_goal: str = dspy.InputField(default="provide actionable guidance")
    answer: str = dspy.OutputField()
    citations: list[str] = dspy.OutputField(desc="context ids the answer rests on, all among context_ids")
    rejected_citations: list[str] = dspy.OutputField(desc="ids the model cited that it was not given")
    missing_context_ids: list[str] = dspy.OutputField(desc="given ids that are not the caller's contexts")


class DocumentationQueryModule(TrellisModule):
    signature: ClassVar[type[dspy.Signature]] = DocumentationQueryInterface
    description: ClassVar[str] = "Stage 1 of documentation retrieval: a question rewritten as a search query."

    def __init__(self, deps: Any) -> None:
        super().__init__(deps)
        self.rewrite = dspy.Predict(DocumentationQuerySignature)

    async def aforward(  # type: ignore[override]
        self, query: str, context: str = "current development session", role: str = "developer"
    ) -> dspy.Prediction:
        rewritten = await self.rewrite.acall(query=query, context=context, role=role)
        processed = " ".join(str(rewritten.processed_query or "").split())
        # A rewrite that lost every word of the question is no better a query than the question.
        if not processed or not (set(_words(processed)) & set(_words(query))):
            processed = query
        return dspy.Prediction(processed_query=processed[:1000], original_query=query)


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"\w+", text) if len(w) > 2]


class DocumentationRetrievalModule(TrellisModule):
    signature: ClassVar[type[dspy.Signature]] = DocumentationRetrievalInterface
    description: ClassVar[str] = (
        "Stage 2: hybrid search over the caller's contexts (filters, relationships), with relevance scores."
    )

    async def aforward(  # type: ignore[override]
        self, query: str, types: list[str] | None = None, limit: int = 5, follow_relationships: bool = True
    ) -> dspy.Prediction:
        from trellis.kit.errors import ValidationFailed

        if not 1 <= limit <= 20:
            raise ValidationFailed.of("limit", "must be between 1 and 20", type="range")
        caller = self.deps.caller
        parsed = SearchQuery.parse(query, mode=SearchMode.HYBRID.value, types=types or (), limit=limit)
        result = await self.deps.search.search(caller.principal, parsed, door="dspy", request_id=caller.request_id)
        documents: list[dict[str, Any]] = []
        seen: set[str] = set()
        for hit in result.hits:
            seen.add(hit.context.id)
            documents.append(
                {
                    "id": hit.context.id,
                    "type": hit.context.type,
                    "score": hit.score,
                    "found_by": sorted(hit.retrievers),
                    "content": hit.context.content[:SNIPPET_CHARS],
                }
            )
        if follow_relationships and documents:
            related = await self.deps.contexts.relationships_of_many(
                caller.principal, [d["id"] for d in documents], direction="outgoing"
            )
            targets: dict[str, tuple[str, float]] = {}
            by_id = {d["id"]: d for d in documents}
            for source_id, edges in related.items():
                for edge in edges:
                    target = edge.target_id
                    if target in seen or target in targets:
                        continue
                    # A related context ranks below what pointed to it, by the edge's strength.
                    targets[target] = (edge.relationship_type, by_id[source_id]["score"] * edge.strength * 0.5)
            rows = await self.deps.contexts.get_many(caller.principal, list(targets))
            for target, (kind, score) in targets.items():
                row = rows.get(target)
                if row is None:
                    continue
                documents.append(
                    {
                        "id": row.id,
                        "type": row.type,
                        "score": score,
                        "found_by": [f"relationship:{kind}"],
                        "content": row.content[:SNIPPET_CHARS],
                    }
                )
        return dspy.Prediction(documents=documents, degraded=list(result.degraded))


class ContextSynthesisModule(TrellisModule):
    signature: ClassVar[type[dspy.Signature]] = ContextSynthesisInterface
    description: ClassVar[str] = "Stage 3: an answer from the given contexts that cites them by id and invents none."

    def __init__(self, deps: Any) -> None:
        super().__init__(deps)
        self.synthesize = dspy.Predict(ContextSynthesisSignature)

    async def aforward(  # type: ignore[override]
        self, question: str, context_ids: list[str], synthesis_goal: str = "provide actionable guidance"
    ) -> dspy.Prediction:
        caller = self.deps.caller
        wanted = list(dict.fromkeys(context_ids))
        rows = await self.deps.contexts.get_many(caller.principal, wanted)
        given = [rows[i] for i in wanted if i in rows]
        missing = [i for i in wanted if i not in rows]
        if not given:
            return dspy.Prediction(answer=NO_SOURCES, citations=[], rejected_citations=[], missing_context_ids=missing)
        sources = "\n\n".join(f"[{row.id}] {row.content[:SNIPPET_CHARS]}" for row in given)
        answer = await self.synthesize.acall(question=question, sources=sources, synthesis_goal=synthesis_goal)
        allowed = {row.id for row in given}
        cited: list[str] = []
        for raw in answer.citations or []:
            # Models write "[ctx_1]", "ctx_1, ctx_2" or "source ctx_1": take the ids out of whatever came.
            cited.extend(_ID.findall(str(raw)) or [str(raw).strip()])
        # Ids named inline in the answer count as citations too.
        cited.extend(_ID.findall(str(answer.answer or "")))
        unique = list(dict.fromkeys(c for c in cited if c))
        return dspy.Prediction(
            answer=str(answer.answer or "").strip(),
            citations=[c for c in unique if c in allowed],
            rejected_citations=[c for c in unique if c not in allowed],
            missing_context_ids=missing,
        )
