"""REST door of durable workflows. Endpoints parse, call ``WorkflowService``, shape the envelope.

Definitions: ``/api/v1/workflows[/{name}[/versions]]``. Runs (the seed's paths): ``POST
/api/v1/workflow/execute``, ``GET /api/v1/workflow/status/{run_id}``, ``GET
/api/v1/workflow/history``, ``POST /api/v1/workflow/{run_id}/cancel|retry``, ``GET
/api/v1/workflow/{run_id}/events`` (JSON pages, or Server-Sent Events with ``Last-Event-ID`` resume
when the client accepts ``text/event-stream``). Inbound hooks: ``/api/v1/workflow/hooks``; their
deliveries (``POST /api/v1/workflow/hooks/{hook_id}``) authenticate by HMAC signature, not by key.
n8n connections: ``/api/v1/n8n/connections/{name}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from trellis.auth.deps import Reader, RuntimeDep, Writer
from trellis.events.runs import event_out
from trellis.kit.clock import as_utc
from trellis.kit.envelope import Envelope, ok
from trellis.kit.errors import ValidationFailed
from trellis.kit.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from trellis.workflows.definition import NAME_PATTERN
from trellis.workflows.schemas import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EventOut,
    EventPage,
    ExecuteOut,
    ExecuteRequest,
    HookCreate,
    HookCreated,
    HookDelivered,
    HookOut,
    N8nConnectionIn,
    N8nConnectionOut,
    RunDetail,
    RunOut,
    RunPage,
    RunStatus,
    StepOut,
    StepTypeOut,
    WorkflowCreate,
    WorkflowDeleted,
    WorkflowOut,
    WorkflowPage,
    WorkflowSaved,
    WorkflowSummary,
    WorkflowUpdate,
)
from trellis.workflows.service import HistoryFilters

definitions = APIRouter(prefix="/api/v1/workflows", tags=["workflows"])
runs = APIRouter(prefix="/api/v1/workflow", tags=["workflow runs"])
n8n = APIRouter(prefix="/api/v1/n8n", tags=["n8n"])

Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"description": "No such workflow, version or run, or another user's (not_found_error)"}}
FORBIDDEN: Responses = {403: {"description": "A non-admin named another owner (authorization_error)"}}
EVENTS_PAGE = 500


# Definitions --------------------------------------------------------------------------------------


@definitions.get("", summary="Your workflows, by name")
async def list_workflows(
    principal: Reader,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=128, description="next_cursor of the previous page.")] = None,
) -> Envelope[WorkflowPage]:
    rows, next_cursor = await runtime.workflows.list_workflows(principal, limit=limit, cursor=cursor)
    items = [
        WorkflowSummary(
            id=row.id,
            name=row.name,
            latest_version=row.latest_version,
            description=description,
            updated_at=row.updated_at,
        )
        for row, description in rows
    ]
    return ok(WorkflowPage(items=items, next_cursor=next_cursor))


@definitions.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a workflow (version 1)",
    description="The definition is checked first: an unknown step type or field, a reference to a step that "
    "does not run before, a cycle, a bad template: a 400 naming the step and the field.",
    responses={409: {"description": "A workflow of that name exists (conflict_error)"}},
)
async def create_workflow(body: WorkflowCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[WorkflowSaved]:
    row, version, definition, changed = await runtime.workflows.save(
        principal, body.name, body.definition, mode="create"
    )
    return ok(WorkflowSaved(**WorkflowOut.of(row, version, definition).model_dump(), changed=changed))


@definitions.get("/{name}", summary="A workflow's latest (or a given) version", responses=NOT_FOUND)
async def get_workflow(
    name: str,
    principal: Reader,
    runtime: RuntimeDep,
    version: Annotated[int | None, Query(ge=1, description="A version; default the latest.")] = None,
) -> Envelope[WorkflowOut]:
    row, chosen, definition = await runtime.workflows.get(principal, name, version)
    return ok(WorkflowOut.of(row, chosen, definition))


@definitions.put(
    "/{name}",
    summary="Save a new version (or create the workflow)",
    description="A definition equal to the latest version makes no new version (`changed: false`). Runs "
    "already started keep the version they started with.",
)
async def put_workflow(
    name: str, body: WorkflowUpdate, principal: Writer, runtime: RuntimeDep, response: Response
) -> Envelope[WorkflowSaved]:
    _check_name(name)
    row, version, definition, changed = await runtime.workflows.save(principal, name, body.definition, mode="apply")
    if version == 1 and changed:
        response.status_code = status.HTTP_201_CREATED
    return ok(WorkflowSaved(**WorkflowOut.of(row, version, definition).model_dump(), changed=changed))


@definitions.get("/{name}/versions", summary="Every version of a workflow", responses=NOT_FOUND)
async def workflow_versions(name: str, principal: Reader, runtime: RuntimeDep) -> Envelope[list[dict[str, Any]]]:
    rows = await runtime.workflows.versions(principal, name)
    return ok([{"version": row.version, "created_at": row.created_at, "definition": row.definition} for row in rows])


@definitions.delete("/{name}", summary="Delete a workflow (its runs keep their version)", responses=NOT_FOUND)
async def delete_workflow(name: str, principal: Writer, runtime: RuntimeDep) -> Envelope[WorkflowDeleted]:
    await runtime.workflows.delete(principal, name)
    return ok(WorkflowDeleted(name=name))


def _check_name(name: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise ValidationFailed.of(
            "name", "letters, digits, _ . - (at most 128), starting with a letter or digit", location="path"
        )


# Runs -----------------------------------------------------------------------------------------------


@runs.get("/step-types", summary="The step types this server knows, with their `with:` schemas")
async def step_types(principal: Reader, runtime: RuntimeDep) -> Envelope[list[StepTypeOut]]:
    return ok(runtime.workflows.step_types())


@runs.post(
    "/execute",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a run",
    description="Answers 202 with the run at once; with `wait` (seconds) it waits that long for the run to end "
    "and answers 200 with its result if it did. The same `idempotency_key` from the same user gives the same "
    "run (`created: false`). The seed's names `workflow_id` and `input_data` are accepted too.",
    responses={
        200: {"description": "The run ended within `wait`"},
        **NOT_FOUND,
        413: {"description": "input over [workflow] max_input_bytes (payload_too_large_error)"},
    },
)
async def execute(
    body: ExecuteRequest, principal: Writer, runtime: RuntimeDep, response: Response
) -> Envelope[ExecuteOut]:
    run, created = await runtime.workflows.execute(principal, body)
    if body.wait > 0 and run.status not in ("succeeded", "failed", "cancelled"):
        run = await runtime.workflows.wait_for(run.id, body.wait)
    if run.status in ("succeeded", "failed", "cancelled"):
        response.status_code = status.HTTP_200_OK
    return ok(ExecuteOut(**RunOut.of(run).model_dump(), created=created))


@runs.get("/status/{run_id}", summary="A run: status, progress, current step, every step's state", responses=NOT_FOUND)
async def run_status(run_id: str, principal: Reader, runtime: RuntimeDep) -> Envelope[RunDetail]:
    run, steps = await runtime.workflows.detail(principal, run_id)
    return ok(RunDetail(**RunOut.of(run).model_dump(), steps=[StepOut.of(step) for step in steps]))


@runs.get(
    "/history",
    summary="Your runs, newest first; filter by workflow, status and time (admins: any owner's)",
    responses=FORBIDDEN,
)
async def history(
    principal: Reader,
    runtime: RuntimeDep,
    owner: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Whose runs: yours by default; an admin may name a user id or `all` (403 for anyone else).",
        ),
    ] = None,
    workflow: Annotated[str | None, Query(max_length=128)] = None,
    status_: Annotated[list[RunStatus] | None, Query(alias="status", description="Repeat for several.")] = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601; UTC if no offset).")] = None,
    until: Annotated[datetime | None, Query(description="Created before.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page.")] = None,
) -> Envelope[RunPage]:
    filters = HistoryFilters(
        workflow=workflow,
        statuses=tuple(status_ or ()),
        since=as_utc(since) if since else None,
        until=as_utc(until) if until else None,
        limit=limit,
        cursor=cursor,
        owner=owner,
    )
    rows, next_cursor = await runtime.workflows.history(principal, filters)
    return ok(RunPage.of(rows, next_cursor, RunOut.of))


# Hooks go before /{run_id}/...: "hooks" is not a run id.


@runs.post(
    "/hooks",
    status_code=status.HTTP_201_CREATED,
    summary="Create an inbound hook (its secret is shown once)",
    description="`start` hooks run `workflow` with the delivery's JSON body (or its `input`) as input; `resume` "
    "hooks wake the run named by the body's `run_id` whose `wait` step waits on this hook, with the body's "
    f"`data` as that step's output. Deliveries carry `{TIMESTAMP_HEADER}` (Unix seconds) and "
    f"`{SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of '<timestamp>.<body>' with the secret>`.",
    responses={404: {"description": "A start hook naming a workflow you do not have (not_found_error)"}},
)
async def create_hook(body: HookCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[HookCreated]:
    hook, secret = await runtime.workflows.create_hook(principal, body)
    return ok(HookCreated(**HookOut.of(hook).model_dump(), secret=secret))


@runs.get("/hooks", summary="Your inbound hooks")
async def list_hooks(principal: Reader, runtime: RuntimeDep) -> Envelope[list[HookOut]]:
    return ok([HookOut.of(hook) for hook in await runtime.workflows.hooks(principal)])


@runs.delete("/hooks/{hook_id}", summary="Revoke a hook: later deliveries are 404", responses=NOT_FOUND)
async def revoke_hook(hook_id: str, principal: Writer, runtime: RuntimeDep) -> Envelope[HookOut]:
    return ok(HookOut.of(await runtime.workflows.revoke_hook(principal, hook_id)))


@runs.post(
    "/hooks/{hook_id}",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deliver to a hook (signed, no API key)",
    description="401 for a missing, stale (over [workflow] hook_tolerance_seconds) or wrong signature and for a "
    "replayed delivery; 404 for an unknown or revoked hook. Nothing starts then.",
    responses={**NOT_FOUND, 409: {"description": "The run is not waiting on this hook (conflict_error)"}},
)
async def deliver(
    hook_id: str,
    request: Request,
    runtime: RuntimeDep,
    timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
) -> Envelope[HookDelivered]:
    body = await request.body()
    run_id, action, created = await runtime.workflows.deliver(hook_id, timestamp, signature, body)
    return ok(HookDelivered(run_id=run_id, action=action, created=created))


@runs.post(
    "/{run_id}/cancel",
    summary="Cancel a run (a running step is interrupted)",
    responses={**NOT_FOUND, 409: {"description": "The run has already ended (conflict_error)"}},
)
async def cancel(run_id: str, principal: Writer, runtime: RuntimeDep) -> Envelope[RunOut]:
    return ok(RunOut.of(await runtime.workflows.cancel(principal, run_id)))


@runs.post(
    "/{run_id}/retry",
    summary="Retry a failed or cancelled run from the steps that did not succeed",
    responses={**NOT_FOUND, 409: {"description": "The run is not failed or cancelled (conflict_error)"}},
)
async def retry(run_id: str, principal: Writer, runtime: RuntimeDep) -> Envelope[RunOut]:
    return ok(RunOut.of(await runtime.workflows.retry(principal, run_id)))


@runs.get(
    "/{run_id}/events",
    summary="A run's event log: JSON pages, or a live Server-Sent Events stream",
    description="With `Accept: text/event-stream` the events are streamed (each with `id: <seq>`), live until "
    "the run ends; reconnect with `Last-Event-ID` to resume after the last one seen. Otherwise a JSON page of "
    "events after `after`.",
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON envelope, or SSE"}, **NOT_FOUND},
    response_model=None,
)
async def events(
    run_id: str,
    principal: Reader,
    runtime: RuntimeDep,
    request: Request,
    after: Annotated[int, Query(ge=0, description="Only events after this sequence number.")] = 0,
    limit: Annotated[int, Query(ge=1, le=EVENTS_PAGE)] = EVENTS_PAGE,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Envelope[EventPage] | EventSourceResponse:
    if last_event_id is not None:
        try:
            after = max(after, int(last_event_id))
        except ValueError:
            raise ValidationFailed.of("Last-Event-ID", "must be an event's seq", location="header") from None
    rows = await runtime.workflows.events(principal, run_id, after=after, limit=limit)
    if "text/event-stream" not in request.headers.get("accept", ""):
        items = [EventOut.of(row) for row in rows]
        return ok(EventPage(items=items, last_seq=items[-1].seq if items else after))

    async def stream() -> AsyncIterator[ServerSentEvent]:
        # Driven by the event bus (the database first, then live; see LiveEvents.follow_run).
        async for delivery in runtime.live.follow_run(principal, run_id, after):
            out = event_out(delivery)
            yield ServerSentEvent(data=json.dumps(out.model_dump(mode="json")), event=out.type, id=str(out.seq))

    return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# n8n connections ------------------------------------------------------------------------------------


@n8n.get("/connections", summary="Your n8n connections (API keys are never shown)")
async def list_connections(principal: Reader, runtime: RuntimeDep) -> Envelope[list[N8nConnectionOut]]:
    return ok([N8nConnectionOut.of(row) for row in await runtime.workflows.connections(principal)])


@n8n.put(
    "/connections/{name}",
    summary="Save an n8n connection (base URL and API key, the key encrypted at rest)",
    description="The base URL must resolve to public addresses unless [workflow] outbound_allow names it.",
)
async def put_connection(
    name: str, body: N8nConnectionIn, principal: Writer, runtime: RuntimeDep
) -> Envelope[N8nConnectionOut]:
    _check_name(name)
    return ok(N8nConnectionOut.of(await runtime.workflows.put_connection(principal, name, body)))


@n8n.delete("/connections/{name}", summary="Delete an n8n connection", responses=NOT_FOUND)
async def delete_connection(name: str, principal: Writer, runtime: RuntimeDep) -> Envelope[dict[str, Any]]:
    await runtime.workflows.delete_connection(principal, name)
    return ok({"name": name, "deleted": True})
