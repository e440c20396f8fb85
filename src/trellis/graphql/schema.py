"""The GraphQL schema: queries, mutations and subscriptions over the services REST calls.

Every root field does what the matching REST endpoint does, in the same order: admit the caller
(``GraphQLContext.admit``: credential, rate limit, scope, as the REST guard), validate arguments
with the REST door's request models (``parse_request``: the same 400 and ``fields``), call the
service from the runtime, shape the answer (``trellis.graphql.types``). No rules of its own.

============================  =======================================  ==========
field                          REST equivalent                          scope
============================  =======================================  ==========
aiResponse / generate          POST /api/v1/ai/generate                 ai (ai budget)
models                         GET /api/v1/ai/models                    read
workflowStatus                 GET /api/v1/workflow/status/{id}         read
workflowRuns                   GET /api/v1/workflow/history             read
workflow                       GET /api/v1/workflows/{name}             read
systemMetrics                  GET /api/v1/metrics/system               admin
userLogs                       GET /api/v1/db/logs?user_id=             read
context / contexts             GET /api/context/{id} / GET /api/context read
searchContexts                 GET /api/context/search                  read
createContext / updateContext  POST / PUT /api/context[/{id}]           write
deleteContext                  DELETE /api/context/{id}                 write
linkContexts / unlinkContexts  POST / DELETE .../relationships          write
executeWorkflow                POST /api/v1/workflow/execute            write
cancelWorkflowRun / retry...   POST /api/v1/workflow/{id}/cancel|retry  write
workflowProgress (sub)         GET /api/v1/workflow/{id}/events (SSE)   read
aiGeneration (sub)             POST /api/v1/ai/generate stream: true    ai (ai budget)
============================  =======================================  ==========
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import strawberry
from graphql import FieldNode
from strawberry.scalars import JSON

from trellis.auth.schemas import Principal, Scope
from trellis.context.schemas import ContextCreate, ContextListQuery, ContextUpdate, RelationshipCreate
from trellis.context.search.schemas import SearchQuery
from trellis.context.service import page_cursor
from trellis.episodic.schemas import LogFilters
from trellis.gateway import tasks
from trellis.gateway.schemas import GenerateRequest
from trellis.gateway.service import CallContext
from trellis.graphql import streams
from trellis.graphql.context import GraphQLContext
from trellis.graphql.errors import parse_request
from trellis.graphql.types import (
    AIGenerationEvent,
    AIResponse,
    Context,
    ContextConnection,
    ContextDeleted,
    ContextEdge,
    ContextSort,
    LogEntry,
    Model,
    PageInfo,
    Relationship,
    SearchGrouping,
    SearchMode,
    SearchResult,
    SystemMetrics,
    Workflow,
    WorkflowEvent,
    WorkflowExecution,
    WorkflowRunConnection,
    WorkflowRunEdge,
    WorkflowStatus,
)
from trellis.kit.clock import as_utc
from trellis.kit.errors import ValidationFailed
from trellis.kit.request_id import current_request_id
from trellis.settings import RouteClass
from trellis.storage.metadata_filter import check_metadata_filter
from trellis.workflows.schemas import DEFAULT_PAGE, MAX_PAGE, ExecuteRequest
from trellis.workflows.service import HistoryFilters, run_cursor

Info = strawberry.Info[GraphQLContext, None]


def _given(**values: Any) -> dict[str, Any]:
    """Arguments the client gave (GraphQL's null and omitted alike mean "not given")."""
    return {key: value for key, value in values.items() if value is not None}


def _call(principal: Principal, cache: tasks.CacheMode) -> CallContext:
    return CallContext(principal=principal, door="graphql", request_id=current_request_id(), cache=cache)


async def _generate(info: Info, body: GenerateRequest) -> AIResponse:
    ctx = info.context
    principal = ctx.principal
    prepared = await tasks.prepare_generate(ctx.runtime.gateway, body)
    out = await tasks.run(ctx.runtime.gateway, _call(principal, body.cache), prepared)
    return AIResponse.of(out, ctx.runtime.clock.now())


# --- inputs ---------------------------------------------------------------------------------------


@strawberry.input(description="POST /api/v1/ai/generate's body (without `stream`: subscribe to aiGeneration).")
class GenerateInput:
    prompt: str
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    cache: str | None = strawberry.field(default=None, description="auto (default), bypass or force.")

    def request(self) -> GenerateRequest:
        return parse_request(
            GenerateRequest,
            _given(
                prompt=self.prompt,
                model=self.model,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=self.stop,
                seed=self.seed,
                cache=self.cache,
            ),
        )


@strawberry.input
class RelationshipInput:
    target_context_id: str
    relationship_type: str
    strength: float | None = None

    def fields(self) -> dict[str, Any]:
        return _given(
            target_context_id=self.target_context_id, relationship_type=self.relationship_type, strength=self.strength
        )


@strawberry.input(description="POST /api/context's body.")
class ContextCreateInput:
    type: str
    content: str
    metadata: JSON | None = None
    relationships: list[RelationshipInput] | None = None


@strawberry.input(description="PUT /api/context/{id}'s body: fields given replace the stored ones.")
class ContextUpdateInput:
    type: str | None = None
    content: str | None = None
    metadata: JSON | None = None
    version: int | None = strawberry.field(
        default=None, description="The version this write is based on (409 if stale)."
    )


@strawberry.input(description="POST /api/v1/workflow/execute's body.")
class ExecuteWorkflowInput:
    workflow: str
    version: int | None = None
    input: JSON | None = None
    idempotency_key: str | None = None
    wait: float | None = strawberry.field(default=None, description="Seconds to wait for the run to end.")


# --- queries --------------------------------------------------------------------------------------


def _selects(info: Info, name: str) -> bool:
    """Whether the field's selection may include ``name`` (fragments count as yes). Reads the AST:
    ``info.selected_fields`` converts the whole selection first, a tenth of a millisecond."""
    for node in info._raw_info.field_nodes:  # the field's AST, as graphql-core gives it to Strawberry
        for selection in node.selection_set.selections if node.selection_set is not None else ():
            if not isinstance(selection, FieldNode) or selection.name.value == name:
                return True
    return False


def _page(first: int, maximum: int) -> int:
    """A page size, checked as the REST door checks its ``limit`` (the 400 names ``limit``)."""
    if not 1 <= first <= maximum:
        raise ValidationFailed.of("limit", f"must be between 1 and {maximum}", location="query")
    return first


@strawberry.type
class Query:
    @strawberry.field(description="Ask a model (the seed's aiResponse): POST /api/v1/ai/generate.")
    async def ai_response(
        self,
        info: Info,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AIResponse | None:
        await info.context.admit(Scope.AI, RouteClass.AI)
        body = parse_request(
            GenerateRequest, _given(prompt=prompt, model=model, max_tokens=max_tokens, temperature=temperature)
        )
        return await _generate(info, body)

    @strawberry.field(description="The configured models and whether each is healthy.")
    async def models(self, info: Info) -> list[Model]:
        await info.context.admit(Scope.READ)
        return [Model.of(out) for out in await tasks.list_models(info.context.runtime.gateway)]

    @strawberry.field(description="A workflow run: status, progress, result (the seed's workflowStatus).")
    async def workflow_status(self, info: Info, id: strawberry.ID) -> WorkflowStatus | None:
        principal = await info.context.admit(Scope.READ)
        service = info.context.runtime.workflows
        if _selects(info, "steps"):  # as REST's status: the run and its steps in one session
            return WorkflowStatus.of(*await service.detail(principal, str(id)))
        return WorkflowStatus.of(await service.run(principal, str(id)))

    @strawberry.field(description="Your runs, newest first, a page at a time (Relay connection).")
    async def workflow_runs(
        self,
        info: Info,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
        workflow: str | None = None,
        status: list[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        owner: Annotated[
            str | None,
            strawberry.argument(description="Whose runs: yours by default; an admin may name a user id or `all`."),
        ] = None,
    ) -> WorkflowRunConnection:
        principal = await info.context.admit(Scope.READ)
        filters = HistoryFilters(
            workflow=workflow,
            statuses=tuple(status or ()),
            since=as_utc(since) if since else None,
            until=as_utc(until) if until else None,
            limit=_page(first, MAX_PAGE),
            cursor=after,
            owner=owner,
        )
        rows, next_cursor = await info.context.runtime.workflows.history(principal, filters)
        return WorkflowRunConnection(
            edges=[WorkflowRunEdge(cursor=run_cursor(row), node=WorkflowStatus.of(row)) for row in rows],
            page_info=PageInfo(has_next_page=next_cursor is not None, end_cursor=next_cursor),
        )

    @strawberry.field(description="One of your workflows, at its latest version or the one asked for.")
    async def workflow(self, info: Info, name: str, version: int | None = None) -> Workflow | None:
        principal = await info.context.admit(Scope.READ)
        row, chosen, _ = await info.context.runtime.workflows.get(principal, name, version)
        found = await info.context.loaders.workflow_version.load((row.id, chosen))
        return Workflow.of(*found) if found is not None else None

    @strawberry.field(description="This process's counters: requests, errors, model calls, tokens… (admins).")
    async def system_metrics(self, info: Info) -> SystemMetrics | None:
        await info.context.admit(Scope.ADMIN)
        return SystemMetrics.of(info.context.runtime.system_metrics.snapshot())

    @strawberry.field(description="A user's model calls, newest first: your own; administrators anyone's.")
    async def user_logs(self, info: Info, user_id: strawberry.ID, limit: int = 50) -> list[LogEntry] | None:
        principal = await info.context.admit(Scope.READ)
        rows, _ = await info.context.runtime.episodic.list(principal, LogFilters(user_id=str(user_id), limit=limit))
        return [LogEntry.of(row) for row in rows]

    @strawberry.field(description="One of your contexts.")
    async def context(self, info: Info, id: strawberry.ID) -> Context | None:
        principal = await info.context.admit(Scope.READ)
        return Context.of(await info.context.runtime.context.get(principal, str(id)))

    @strawberry.field(description="Your contexts, a page at a time (Relay connection over GET /api/context).")
    async def contexts(
        self,
        info: Info,
        first: int = 50,
        after: str | None = None,
        types: list[str] | None = None,
        metadata: JSON | None = None,
        sort: ContextSort = ContextSort.UPDATED_DESC,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        owner: Annotated[
            str | None,
            strawberry.argument(description="Whose contexts: yours by default; an admin may name a user id or `all`."),
        ] = None,
    ) -> ContextConnection:
        principal = await info.context.admit(Scope.READ)
        query = ContextListQuery.parse(
            types=types or (),
            metadata=_metadata(metadata),
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
            sort=sort.value,
            limit=first,
            cursor=after,
            owner=owner,
        )
        rows, next_cursor = await info.context.runtime.context.list_page(principal, query)
        return ContextConnection(
            edges=[ContextEdge(cursor=page_cursor(row, query.sort), node=Context.of(row)) for row in rows],
            page_info=PageInfo(has_next_page=next_cursor is not None, end_cursor=next_cursor),
        )

    @strawberry.field(description="Search your contexts: hybrid (default), semantic or keyword.")
    async def search_contexts(
        self,
        info: Info,
        query: str,
        mode: SearchMode = SearchMode.HYBRID,
        types: list[str] | None = None,
        metadata: JSON | None = None,
        limit: int | None = None,
        group: SearchGrouping = SearchGrouping.CONTEXT,
        passages: bool = False,
        rerank: bool = False,
    ) -> SearchResult:
        principal = await info.context.admit(Scope.READ)
        parsed = SearchQuery.parse(
            query,
            mode=mode.value,
            types=types or (),
            metadata=_metadata(metadata),
            limit=limit,
            group=group.value,
            passages=passages,
            rerank=rerank,
        )
        result = await info.context.runtime.search.search(
            principal, parsed, door="graphql", request_id=current_request_id()
        )
        return SearchResult.of(result)


def _metadata(value: JSON | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed.of("metadata", "a JSON object of key: value (or key: [values])", location="query")
    return check_metadata_filter(value, field="metadata")


# --- mutations ------------------------------------------------------------------------------------


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Generate text from a prompt: POST /api/v1/ai/generate.")
    async def generate(self, info: Info, input: GenerateInput) -> AIResponse:
        await info.context.admit(Scope.AI, RouteClass.AI)
        return await _generate(info, input.request())

    @strawberry.mutation(description="Create a context, with its outgoing relationships or not at all.")
    async def create_context(self, info: Info, input: ContextCreateInput) -> Context:
        principal = await info.context.admit(Scope.WRITE)
        body = parse_request(
            ContextCreate,
            _given(
                type=input.type,
                content=input.content,
                metadata=input.metadata,
                relationships=[r.fields() for r in input.relationships] if input.relationships is not None else None,
            ),
        )
        row, _ = await info.context.runtime.context.create(principal, body)
        return Context.of(row)

    @strawberry.mutation(description="Update a context: the fields given replace the stored ones.")
    async def update_context(self, info: Info, id: strawberry.ID, input: ContextUpdateInput) -> Context:
        principal = await info.context.admit(Scope.WRITE)
        body = parse_request(
            ContextUpdate,
            _given(type=input.type, content=input.content, metadata=input.metadata, version=input.version),
        )
        return Context.of(await info.context.runtime.context.update(principal, str(id), body))

    @strawberry.mutation(description="Delete a context and its relationships; with `version`, only if still at it.")
    async def delete_context(self, info: Info, id: strawberry.ID, version: int | None = None) -> ContextDeleted:
        principal = await info.context.admit(Scope.WRITE)
        return ContextDeleted.of(
            await info.context.runtime.context.delete(principal, str(id), expected_version=version)
        )

    @strawberry.mutation(description="Relate a context to another of yours.")
    async def link_contexts(self, info: Info, id: strawberry.ID, input: RelationshipInput) -> Relationship:
        principal = await info.context.admit(Scope.WRITE)
        body = parse_request(RelationshipCreate, input.fields())
        return Relationship.of(await info.context.runtime.context.add_relationship(principal, str(id), body))

    @strawberry.mutation(description="Delete one of a context's relationships (either direction).")
    async def unlink_contexts(self, info: Info, id: strawberry.ID, relationship_id: strawberry.ID) -> Relationship:
        principal = await info.context.admit(Scope.WRITE)
        out = await info.context.runtime.context.delete_relationship(principal, str(id), str(relationship_id))
        return Relationship.of(out)

    @strawberry.mutation(description="Start a run (with `wait`, wait that long for it to end).")
    async def execute_workflow(self, info: Info, input: ExecuteWorkflowInput) -> WorkflowExecution:
        principal = await info.context.admit(Scope.WRITE)
        body = parse_request(
            ExecuteRequest,
            _given(
                workflow=input.workflow,
                version=input.version,
                input=input.input,
                idempotency_key=input.idempotency_key,
                wait=input.wait,
            ),
        )
        service = info.context.runtime.workflows
        run, created = await service.execute(principal, body)
        if body.wait > 0 and run.status not in ("succeeded", "failed", "cancelled"):
            run = await service.wait_for(run.id, body.wait)
        return WorkflowExecution(created=created, run=WorkflowStatus.of(run))

    @strawberry.mutation(description="Cancel a queued, running or waiting run.")
    async def cancel_workflow_run(self, info: Info, id: strawberry.ID) -> WorkflowStatus:
        principal = await info.context.admit(Scope.WRITE)
        return WorkflowStatus.of(await info.context.runtime.workflows.cancel(principal, str(id)))

    @strawberry.mutation(description="Retry a failed or cancelled run from the steps that did not succeed.")
    async def retry_workflow_run(self, info: Info, id: strawberry.ID) -> WorkflowStatus:
        principal = await info.context.admit(Scope.WRITE)
        return WorkflowStatus.of(await info.context.runtime.workflows.retry(principal, str(id)))


# --- subscriptions --------------------------------------------------------------------------------


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="A run's events: those after `after` from its log, then live until the run ends."
    )
    async def workflow_progress(
        self, info: Info, run_id: strawberry.ID, after: int = 0
    ) -> AsyncGenerator[WorkflowEvent, None]:
        principal = await info.context.admit(Scope.READ)
        source = await streams.follow_run(info.context.runtime, principal, str(run_id), after=max(0, after))
        return _events(str(run_id), source)

    @strawberry.subscription(description="A streamed generation: token deltas, then the whole answer.")
    async def ai_generation(
        self,
        info: Info,
        prompt: str,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncGenerator[AIGenerationEvent, None]:
        principal = await info.context.admit(Scope.AI, RouteClass.AI)
        body = parse_request(
            GenerateRequest, _given(prompt=prompt, model=model, max_tokens=max_tokens, temperature=temperature)
        )
        runtime = info.context.runtime
        prepared = await tasks.prepare_generate(runtime.gateway, body)
        return _generation(info, streams.generation(runtime, _call(principal, body.cache), prepared))


async def _events(run_id: str, source: AsyncIterator[Any]) -> AsyncGenerator[WorkflowEvent, None]:
    async for event in source:
        yield WorkflowEvent.of(run_id, event)


async def _generation(info: Info, source: AsyncIterator[Any]) -> AsyncGenerator[AIGenerationEvent, None]:
    async for item in source:
        if isinstance(item, str):
            yield AIGenerationEvent(delta=item, done=False, response=None)
        else:
            yield AIGenerationEvent(
                delta=None, done=True, response=AIResponse.of(item, info.context.runtime.clock.now())
            )
