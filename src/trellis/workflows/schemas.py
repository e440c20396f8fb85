"""Request and response models of the workflow API (every door: REST, CLI, later GraphQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field

from trellis.kit.pagination import Page
from trellis.kit.requests import RequestModel
from trellis.workflows.definition import NAME_PATTERN
from trellis.workflows.models import N8nConnection, Workflow, WorkflowEvent, WorkflowHook, WorkflowRun, WorkflowStep

RunStatus = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
WorkflowName = Annotated[str, Field(pattern=NAME_PATTERN, description="Letters, digits, _ . -; at most 128.")]
DEFAULT_PAGE = 50
MAX_PAGE = 500


class WorkflowCreate(RequestModel):
    name: WorkflowName
    definition: dict[str, Any] = Field(description="The workflow: steps, input_schema, output (see the docs).")


class WorkflowUpdate(RequestModel):
    definition: dict[str, Any]


class WorkflowOut(BaseModel):
    id: str
    name: str
    version: int = Field(description="The version shown (the latest unless asked for another).")
    latest_version: int
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Workflow, version: int, definition: dict[str, Any]) -> WorkflowOut:
        return cls(
            id=row.id,
            name=row.name,
            version=version,
            latest_version=row.latest_version,
            definition=definition,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class WorkflowSaved(WorkflowOut):
    changed: bool = Field(description="False when the definition equals the latest version (no new version).")


class WorkflowSummary(BaseModel):
    id: str
    name: str
    latest_version: int
    description: str | None
    updated_at: datetime


class WorkflowPage(Page[WorkflowSummary]):
    pass


class WorkflowDeleted(BaseModel):
    name: str
    deleted: Literal[True] = True


class ExecuteRequest(RequestModel):
    workflow: WorkflowName = Field(validation_alias=AliasChoices("workflow", "workflow_id"))
    version: Annotated[int, Field(ge=1)] | None = None
    input: Any = Field(default_factory=dict, validation_alias=AliasChoices("input", "input_data"))
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    wait: Annotated[float, Field(ge=0, description="Seconds to wait for the result (capped by the server).")] = 0


class StepOut(BaseModel):
    key: str
    status: str
    attempt: int
    output: Any
    error: dict[str, Any] | None
    waiting_for: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: WorkflowStep) -> StepOut:
        waiting = None
        if row.status == "waiting" and row.suspend:
            waiting = {k: v for k, v in row.suspend.items() if v is not None and k != "timeout_output"}
        return cls(
            key=row.key,
            status=row.status,
            attempt=row.attempt,
            output=row.output,
            error=row.error,
            waiting_for=waiting,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class RunOut(BaseModel):
    id: str
    execution_id: str = Field(description="The same as id (the seed's name).")
    owner_id: str = Field(description="The user who started the run (an admin reads every user's runs).")
    workflow: str
    version: int
    status: RunStatus
    progress: float = Field(description="0..1: the share of the workflow's steps that are done.")
    current_step: str | None
    input: Any
    result: Any
    error: dict[str, Any] | None
    cancel_requested: bool
    parent_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, row: WorkflowRun) -> RunOut:
        return cls(
            id=row.id,
            execution_id=row.id,
            owner_id=row.owner_id,
            workflow=row.workflow_name,
            version=row.version,
            status=row.status,
            progress=row.progress,
            current_step=row.current_step,
            input=row.input,
            result=row.result,
            error=row.error,
            cancel_requested=row.cancel_requested,
            parent_run_id=row.parent_run_id,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            updated_at=row.updated_at,
        )


class RunDetail(RunOut):
    steps: list[StepOut]


class ExecuteOut(RunOut):
    created: bool = Field(description="False when an earlier request with this idempotency key made the run.")


class RunPage(Page[RunOut]):
    pass


class EventOut(BaseModel):
    seq: int
    type: str
    step: str | None
    data: dict[str, Any]
    at: datetime

    @classmethod
    def of(cls, row: WorkflowEvent) -> EventOut:
        return cls(seq=row.seq, type=row.type, step=row.step, data=row.data, at=row.at)


class EventPage(BaseModel):
    items: list[EventOut]
    last_seq: int = Field(description="Pass as `after` for the next page.")


class HookCreate(RequestModel):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    action: Literal["start", "resume"] = Field(
        description="start: run `workflow` with the body as input; resume: wake a run's wait step on this hook."
    )
    workflow: WorkflowName | None = None


class HookOut(BaseModel):
    id: str
    name: str
    action: str
    workflow: str | None
    url: str = Field(description="Path to POST to.")
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: WorkflowHook) -> HookOut:
        return cls(
            id=row.id,
            name=row.name,
            action=row.action,
            workflow=row.workflow_name,
            url=f"/api/v1/workflow/hooks/{row.id}",
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )


class HookCreated(HookOut):
    secret: str = Field(description="Shown once: signs deliveries (HMAC-SHA256, see the docs).")


class HookDelivered(BaseModel):
    run_id: str
    action: str
    created: bool


class N8nConnectionIn(RequestModel):
    base_url: Annotated[str, Field(min_length=1, max_length=2048, description="e.g. https://n8n.example.com")]
    api_key: Annotated[str, Field(min_length=1, max_length=4096, description="n8n's public API key.")]


class N8nConnectionOut(BaseModel):
    name: str
    base_url: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: N8nConnection) -> N8nConnectionOut:
        return cls(name=row.name, base_url=row.base_url, created_at=row.created_at, updated_at=row.updated_at)


class StepTypeOut(BaseModel):
    name: str
    description: str
    side_effects: bool
    config_schema: dict[str, Any]
