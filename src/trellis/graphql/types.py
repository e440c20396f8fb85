"""The GraphQL types: the REST door's response shapes (``*Out`` in each slice's ``schemas.py``) with
camelCase names, built by ``of`` from the same objects. Nested fields read through the request's
DataLoaders (``trellis.graphql.loaders``), never a query per item.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from trellis.context.models import Context as ContextRow
from trellis.context.schemas import ContextDeleted as ContextDeletedOut
from trellis.context.schemas import ContextOut, Direction, GraphOut, RelationshipOut
from trellis.context.search.schemas import Retriever, SearchHitOut, SearchOut
from trellis.context.search.schemas import SearchResult as SearchFound
from trellis.episodic.models import EpisodicLog
from trellis.episodic.schemas import LogOut
from trellis.gateway.schemas import GenerationOut, ModelOut
from trellis.graphql.context import GraphQLContext
from trellis.kit.clock import utc_timestamp
from trellis.metrics.schemas import SystemMetricsOut
from trellis.workflows.models import Workflow as WorkflowRow
from trellis.workflows.models import WorkflowRun, WorkflowStep, WorkflowVersion
from trellis.workflows.schemas import EventOut, RunOut, StepOut

Info = strawberry.Info[GraphQLContext, None]


def _json(value: Any) -> JSON:
    return JSON(value)


def to_json_text(value: Any) -> str | None:
    """A JSON value as text (the seed's ``result: String``), None for None."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- pages ---------------------------------------------------------------------------------------


@strawberry.type(description="Relay's page information over the services' keyset cursors.")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="True when the service returned a cursor for a next page (that page may be empty)."
    )
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")


# --- the gateway ---------------------------------------------------------------------------------


@strawberry.type(description="A model's answer (the seed's AIResponse); the REST door's generate data.")
class AIResponse:
    content: str
    model: str = strawberry.field(description="The model that answered (after aliases and fallbacks).")
    tokens_used: int
    response_time: float = strawberry.field(description="Seconds.")
    timestamp: str = strawberry.field(description="When the answer was complete (ISO 8601, UTC).")
    requested_model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    cached: bool
    fallback_from: str | None

    @classmethod
    def of(cls, out: GenerationOut, at: datetime) -> AIResponse:
        return cls(
            content=out.response,
            model=out.model,
            tokens_used=out.tokens_used,
            response_time=out.response_time,
            timestamp=utc_timestamp(at),
            requested_model=out.requested_model,
            provider=out.provider,
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            finish_reason=out.finish_reason,
            cached=out.cached,
            fallback_from=out.fallback_from,
        )


@strawberry.type(description="One event of a streamed generation: token deltas, then the complete answer.")
class AIGenerationEvent:
    delta: str | None = strawberry.field(description="New text (null on the last event).")
    done: bool = strawberry.field(description="True on the last event, which carries the answer.")
    response: AIResponse | None = strawberry.field(description="The whole answer, on the last event.")


@strawberry.type(description="A configured model and whether it is healthy.")
class Model:
    name: str
    provider: str
    model_id: str
    aliases: list[str]
    capabilities: list[str]
    context_window: int
    max_output_tokens: int
    price_per_1k_input: float
    price_per_1k_output: float
    fallbacks: list[str]
    healthy: bool
    breaker: str

    @classmethod
    def of(cls, out: ModelOut) -> Model:
        return cls(**out.model_dump())


@strawberry.type(description="One model call from the episodic log.")
class LogEntry:
    id: strawberry.ID
    created_at: datetime
    owner_id: str
    request_id: str | None
    door: str
    requested_model: str
    served_model: str | None
    provider: str | None
    prompt: str | None
    messages: JSON | None
    response: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    cost: float
    cached: bool
    status: str
    error: str | None
    finish_reason: str | None
    attempts: int
    fallback_from: str | None
    module: str | None = strawberry.field(description="The DSPy module that made the call (door dspy).")

    @classmethod
    def of(cls, row: EpisodicLog) -> LogEntry:
        out = LogOut.model_validate(row).model_dump()
        out["id"] = strawberry.ID(out["id"])
        out["messages"] = _json(out["messages"]) if out["messages"] is not None else None
        return cls(**out)


# --- system metrics ------------------------------------------------------------------------------


@strawberry.type
class HttpTotals:
    requests: int
    client_errors: int
    server_errors: int
    rate_limited: int


@strawberry.type
class ModelTotals:
    calls: int
    errors: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    cache_hits: int
    cache_misses: int
    fallbacks: int
    retries: int
    log_rows_dropped: int


@strawberry.type
class BreakerState:
    endpoint: str
    open: bool


@strawberry.type
class StatusCount:
    status: str
    count: int


@strawberry.type
class WorkflowTotals:
    active_runs: int
    runs_ended: list[StatusCount]
    steps: int
    runs_lost: int


@strawberry.type(description="This process's counters since it started (GET /api/v1/metrics/system).")
class SystemMetrics:
    timestamp: datetime
    version: str
    uptime_seconds: float
    http: HttpTotals
    models: ModelTotals
    breakers: list[BreakerState]
    workflows: WorkflowTotals

    @classmethod
    def of(cls, out: SystemMetricsOut) -> SystemMetrics:
        return cls(
            timestamp=out.timestamp,
            version=out.version,
            uptime_seconds=out.uptime_seconds,
            http=HttpTotals(**out.http.model_dump()),
            models=ModelTotals(**out.models.model_dump()),
            breakers=[BreakerState(endpoint=b.endpoint, open=b.open) for b in out.breakers],
            workflows=WorkflowTotals(
                active_runs=out.workflows.active_runs,
                runs_ended=[StatusCount(status=k, count=v) for k, v in out.workflows.runs_ended.items()],
                steps=out.workflows.steps,
                runs_lost=out.workflows.runs_lost,
            ),
        )


# --- contexts ------------------------------------------------------------------------------------


@strawberry.enum(description="Relative to the context the relationship is seen from.")
class RelationshipDirection(Enum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


@strawberry.enum
class SearchMode(Enum):
    HYBRID = "hybrid"
    SEMANTIC = "semantic"
    KEYWORD = "keyword"


@strawberry.enum(description="Search hits per context (each chunk apart) or per document (its chunks fused).")
class SearchGrouping(Enum):
    CONTEXT = "context"
    DOCUMENT = "document"


@strawberry.enum(description="A context listing's order: a column, newest first when DESC.")
class ContextSort(Enum):
    CREATED = "created"
    CREATED_DESC = "-created"
    UPDATED = "updated"
    UPDATED_DESC = "-updated"


@strawberry.type(description="A typed piece of memory, private to its owner.")
class Context:
    id: strawberry.ID
    owner_id: str
    type: str
    content: str
    metadata: JSON
    version: int = strawberry.field(description="Bumped by each update; pass it back to update or delete safely.")
    content_hash: str
    source: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ContextRow) -> Context:
        out = ContextOut.of(row)
        return cls(
            id=strawberry.ID(out.id),
            owner_id=out.owner_id,
            type=out.type,
            content=out.content,
            metadata=_json(out.metadata),
            version=out.version,
            content_hash=out.content_hash,
            source=out.source,
            created_at=out.created_at,
            updated_at=out.updated_at,
        )

    @strawberry.field(description="This context's relationships, both directions unless `direction` says one.")
    async def relationships(
        self,
        info: Info,
        relationship_type: str | None = None,
        direction: RelationshipDirection | None = None,
    ) -> list[Relationship]:
        wanted: Direction | None = direction.value if direction is not None else None
        rows = await info.context.loaders.relationships.load((str(self.id), relationship_type, wanted))
        return [Relationship.of(row) for row in rows]

    @strawberry.field(description="The contexts around this one, breadth-first (GET /api/context/{id}/graph).")
    async def graph(self, info: Info, depth: int = 2, relationship_type: str | None = None) -> ContextGraph:
        ctx = info.context
        out = await ctx.runtime.context.graph(
            ctx.principal, str(self.id), depth=depth, relationship_type=relationship_type
        )
        return ContextGraph.of(out)


async def _load_context(info: Info, context_id: str) -> Context | None:
    row = await info.context.loaders.context.load(context_id)
    return Context.of(row) if row is not None else None


@strawberry.type(description="A directed, typed edge between two of your contexts.")
class Relationship:
    id: strawberry.ID
    source_id: str
    target_id: str
    relationship_type: str
    strength: float
    created_at: datetime
    direction: RelationshipDirection

    @classmethod
    def of(cls, out: RelationshipOut) -> Relationship:
        return cls(
            id=strawberry.ID(out.id),
            source_id=out.source_id,
            target_id=out.target_id,
            relationship_type=out.relationship_type,
            strength=out.strength,
            created_at=out.created_at,
            direction=RelationshipDirection(out.direction),
        )

    @strawberry.field(description="The context at the other end from the one it was read from.")
    async def other(self, info: Info) -> Context | None:
        other = self.target_id if self.direction is RelationshipDirection.OUTGOING else self.source_id
        return await _load_context(info, other)

    @strawberry.field
    async def source(self, info: Info) -> Context | None:
        return await _load_context(info, self.source_id)

    @strawberry.field
    async def target(self, info: Info) -> Context | None:
        return await _load_context(info, self.target_id)


@strawberry.type
class GraphNode:
    id: strawberry.ID
    type: str
    depth: int
    content_preview: str
    metadata: JSON

    @strawberry.field(description="The whole context.")
    async def context(self, info: Info) -> Context | None:
        return await _load_context(info, str(self.id))


@strawberry.type
class GraphEdge:
    id: strawberry.ID
    source_id: str
    target_id: str
    relationship_type: str
    strength: float


@strawberry.type(description="A breadth-first walk from a context over its relationships.")
class ContextGraph:
    root: str
    depth: int
    relationship_type: str | None
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    truncated: bool

    @classmethod
    def of(cls, out: GraphOut) -> ContextGraph:
        return cls(
            root=out.root,
            depth=out.depth,
            relationship_type=out.relationship_type,
            nodes=[
                GraphNode(
                    id=strawberry.ID(n.id),
                    type=n.type,
                    depth=n.depth,
                    content_preview=n.content_preview,
                    metadata=_json(n.metadata),
                )
                for n in out.nodes
            ],
            edges=[
                GraphEdge(
                    id=strawberry.ID(e.id),
                    source_id=e.source_id,
                    target_id=e.target_id,
                    relationship_type=e.relationship_type,
                    strength=e.strength,
                )
                for e in out.edges
            ],
            truncated=out.truncated,
        )


@strawberry.type
class ContextDeleted:
    id: strawberry.ID
    deleted: bool
    relationships_removed: int

    @classmethod
    def of(cls, out: ContextDeletedOut) -> ContextDeleted:
        return cls(id=strawberry.ID(out.id), deleted=out.deleted, relationships_removed=out.relationships_removed)


@strawberry.type
class ContextEdge:
    cursor: str
    node: Context


@strawberry.type(description="A page of your contexts (GET /api/context).")
class ContextConnection:
    edges: list[ContextEdge]
    page_info: PageInfo


@strawberry.type
class RetrieverRank:
    rank: int
    score: float


@strawberry.type(description="The ingested document a hit belongs to (or is).")
class DocumentRef:
    source: str
    id: strawberry.ID | None


@strawberry.type(description="Whether the cross-encoder reordered the candidates (asked for with rerank).")
class RerankReport:
    applied: bool
    model: str | None
    candidates: int
    milliseconds: float
    reason: str | None


@strawberry.type
class SearchHit:
    context: Context
    score: float
    keyword: RetrieverRank | None = strawberry.field(description="Where keyword search ranked it, if it did.")
    semantic: RetrieverRank | None = strawberry.field(description="Where semantic search ranked it, if it did.")
    document: DocumentRef | None = strawberry.field(description="Its ingested document; null for other contexts.")
    heading_path: list[str] | None = strawberry.field(description="A markdown chunk's headings, outermost first.")
    passage: str | None = strawberry.field(description="With passages: the best-matching chunk's text.")
    matches: int = strawberry.field(description="group DOCUMENT: how many of the document's contexts were found.")
    rerank_score: float | None = strawberry.field(description="With rerank: the cross-encoder's score (a logit).")


@strawberry.type(description="Search results (GET /api/context/search).")
class SearchResult:
    query: str
    mode: SearchMode
    limit: int
    types: list[str]
    metadata: JSON
    model: str | None
    degraded: list[str]
    group: SearchGrouping
    rerank: RerankReport | None
    items: list[SearchHit]

    @classmethod
    def of(cls, result: SearchFound) -> SearchResult:
        out = SearchOut.of(result)

        def rank(hit: SearchHitOut, name: Retriever) -> RetrieverRank | None:
            found = hit.retrievers.get(name)
            return RetrieverRank(rank=found.rank, score=found.score) if found is not None else None

        return cls(
            query=out.query,
            mode=SearchMode(out.mode.value),
            limit=out.limit,
            types=out.types,
            metadata=_json(out.metadata),
            model=out.model,
            degraded=list(out.degraded),
            group=SearchGrouping(out.group.value),
            rerank=None if out.rerank is None else RerankReport(**out.rerank.model_dump()),
            items=[
                SearchHit(
                    context=Context.of(found.context),
                    score=hit.score,
                    keyword=rank(hit, "keyword"),
                    semantic=rank(hit, "semantic"),
                    document=None
                    if hit.document is None
                    else DocumentRef(
                        source=hit.document.source,
                        id=strawberry.ID(hit.document.id) if hit.document.id is not None else None,
                    ),
                    heading_path=hit.heading_path,
                    passage=hit.passage,
                    matches=hit.matches,
                    rerank_score=hit.rerank_score,
                )
                for found, hit in zip(result.hits, out.items, strict=True)
            ],
        )


# --- workflows -----------------------------------------------------------------------------------


@strawberry.type(description="A saved workflow at one version (GET /api/v1/workflows/{name}).")
class Workflow:
    id: strawberry.ID
    name: str
    version: int
    latest_version: int
    description: str | None
    definition: JSON
    created_at: datetime
    updated_at: datetime
    deleted: bool

    @classmethod
    def of(cls, row: WorkflowRow, version: WorkflowVersion) -> Workflow:
        definition = dict(version.definition or {})
        description = definition.get("description")
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            version=version.version,
            latest_version=row.latest_version,
            description=description if isinstance(description, str) else None,
            definition=_json(definition),
            created_at=row.created_at,
            updated_at=row.updated_at,
            deleted=row.deleted_at is not None,
        )


@strawberry.type(description="One step of a run.")
class WorkflowStepState:
    key: str
    status: str
    attempt: int
    output: JSON | None
    error: JSON | None
    waiting_for: JSON | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: WorkflowStep) -> WorkflowStepState:
        out = StepOut.of(row)
        return cls(
            key=out.key,
            status=out.status,
            attempt=out.attempt,
            output=_json(out.output),
            error=_json(out.error) if out.error is not None else None,
            waiting_for=_json(out.waiting_for) if out.waiting_for is not None else None,
            started_at=out.started_at,
            finished_at=out.finished_at,
        )


@strawberry.type(description="A workflow run (the seed's WorkflowStatus; GET /api/v1/workflow/status/{id}).")
class WorkflowStatus:
    id: strawberry.ID
    owner_id: str = strawberry.field(description="The user who started the run (admins read every user's runs).")
    status: str = strawberry.field(description="queued, running, waiting, succeeded, failed or cancelled.")
    progress: float = strawberry.field(description="0..1: the share of the workflow's steps that are done.")
    result: str | None = strawberry.field(description="The run's result as JSON text (`output` has it as JSON).")
    error: str | None = strawberry.field(description="What went wrong, in a sentence (`errorDetails` has it all).")
    output: JSON | None
    error_details: JSON | None
    workflow: str = strawberry.field(description="The workflow's name.")
    version: int
    current_step: str | None
    input: JSON | None
    cancel_requested: bool
    parent_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    row: strawberry.Private[WorkflowRun]
    preloaded_steps: strawberry.Private[list[WorkflowStep] | None] = None

    @classmethod
    def of(cls, row: WorkflowRun, steps: list[WorkflowStep] | None = None) -> WorkflowStatus:
        out = RunOut.of(row)
        message = out.error.get("message") if isinstance(out.error, dict) else None
        return cls(
            id=strawberry.ID(out.id),
            owner_id=out.owner_id,
            status=out.status,
            progress=out.progress,
            result=to_json_text(out.result),
            error=message if isinstance(message, str) else to_json_text(out.error),
            output=_json(out.result),
            error_details=_json(out.error) if out.error is not None else None,
            workflow=out.workflow,
            version=out.version,
            current_step=out.current_step,
            input=_json(out.input),
            cancel_requested=out.cancel_requested,
            parent_run_id=out.parent_run_id,
            created_at=out.created_at,
            started_at=out.started_at,
            finished_at=out.finished_at,
            updated_at=out.updated_at,
            row=row,
            preloaded_steps=steps,
        )

    @strawberry.field(description="Every step's state, in the definition's order.")
    async def steps(self, info: Info) -> list[WorkflowStepState]:
        rows = self.preloaded_steps
        if rows is None:
            rows = await info.context.loaders.steps.load(self.row)
        return [WorkflowStepState.of(step) for step in rows]

    @strawberry.field(description="The workflow and the version this run ran (deleted workflows included).")
    async def definition(self, info: Info) -> Workflow | None:
        found = await info.context.loaders.workflow_version.load((self.row.workflow_id, self.row.version))
        return Workflow.of(*found) if found is not None else None


@strawberry.type
class WorkflowRunEdge:
    cursor: str
    node: WorkflowStatus


@strawberry.type(description="A page of your runs, newest first (GET /api/v1/workflow/history).")
class WorkflowRunConnection:
    edges: list[WorkflowRunEdge]
    page_info: PageInfo


@strawberry.type
class WorkflowExecution:
    created: bool = strawberry.field(description="False when an earlier call with this idempotency key made the run.")
    run: WorkflowStatus


@strawberry.type(description="One event of a run's log (workflowProgress).")
class WorkflowEvent:
    run_id: strawberry.ID
    seq: int = strawberry.field(description="Monotonic per run: resume with `after: seq`.")
    type: str = strawberry.field(description="run.queued, run.started, step.started, step.succeeded, run.succeeded…")
    step: str | None
    data: JSON
    at: datetime

    @classmethod
    def of(cls, run_id: str, out: EventOut) -> WorkflowEvent:
        return cls(
            run_id=strawberry.ID(run_id), seq=out.seq, type=out.type, step=out.step, data=_json(out.data), at=out.at
        )

    @strawberry.field(description="The run as it is now (status, progress).")
    async def run(self, info: Info) -> WorkflowStatus:
        ctx = info.context
        return WorkflowStatus.of(await ctx.runtime.workflows.run(ctx.principal, str(self.run_id)))
