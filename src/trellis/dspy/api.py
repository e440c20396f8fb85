"""REST door for DSPy: ``/api/v1/dspy/modules`` (list, describe, run), ``/api/v1/dspy/workflows``
(list, run), ``/api/v1/dspy/datasets`` (upload, list, show, delete) and ``/api/v1/dspy/programs``
(create, list, show with versions and scores, optimize, deploy, rollback, run). Parse, call
``DSPyService`` / ``ProgramService``, shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel

from trellis.auth.deps import Reader, RuntimeDep, Writer
from trellis.dspy.schemas import (
    RESOURCE_NAME_PATTERN,
    DatasetCreate,
    DatasetOut,
    DeployRequest,
    ModuleOut,
    ModuleRunOut,
    ModuleRunRequest,
    OptimizeRequest,
    OptimizeStarted,
    ProgramCreate,
    ProgramOut,
    RollbackRequest,
    WorkflowOut,
    WorkflowRunOut,
)
from trellis.kit.envelope import Envelope, ok
from trellis.kit.errors import UnsupportedMediaType, ValidationFailed
from trellis.kit.request_id import current_request_id

router = APIRouter(prefix="/api/v1/dspy", tags=["dspy"])

Name = Annotated[str, Path(min_length=1, max_length=200, description="A registered module's name.")]
RUN_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "An input missing, unknown or of the wrong type (validation_error naming inputs.<field>)"},
    403: {"description": "The credential lacks the ai scope (or write, for a module that writes)"},
    404: {"description": "No such module or workflow"},
    429: {"description": "The caller's ai budget is spent (each model call takes one)"},
    502: {"description": "The model's answer could not be parsed into the module's outputs (model_output_error)"},
    503: {"description": "No model can serve right now (breaker open, provider down)"},
}


@router.get("/modules", summary="The registered DSPy modules and their signature fields")
async def list_modules(principal: Reader, runtime: RuntimeDep) -> Envelope[list[ModuleOut]]:
    return ok(runtime.dspy.list_modules())


@router.get("/modules/{name}", summary="One DSPy module and its signature fields", responses={404: {}})
async def get_module(name: Name, principal: Reader, runtime: RuntimeDep) -> Envelope[ModuleOut]:
    return ok(runtime.dspy.describe(name))


@router.post("/modules/{name}/run", summary="Run a DSPy module as yourself", responses=RUN_ERRORS)
async def run_module(
    name: Name, body: ModuleRunRequest, principal: Writer, runtime: RuntimeDep
) -> Envelope[ModuleRunOut]:
    result = await runtime.dspy.run_module(
        principal, name, body.inputs, model=body.model, request_id=current_request_id()
    )
    return ok(result)


@router.get("/workflows", summary="The registered DSPy module workflows")
async def list_workflows(principal: Reader, runtime: RuntimeDep) -> Envelope[list[WorkflowOut]]:
    return ok(runtime.dspy.list_workflows())


@router.post("/workflows/{name}/run", summary="Run a module workflow's stages as a chain", responses=RUN_ERRORS)
async def run_workflow(
    name: Name, body: ModuleRunRequest, principal: Writer, runtime: RuntimeDep
) -> Envelope[WorkflowRunOut]:
    result = await runtime.dspy.run_workflow(
        principal, name, body.inputs, model=body.model, request_id=current_request_id()
    )
    return ok(result)


# --- datasets and programs ------------------------------------------------------------------------

Id = Annotated[str, Path(min_length=1, max_length=40, description="The id POST answered.")]
NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "No such dataset or program of yours"}}


class Deleted(BaseModel):
    id: str
    deleted: bool = True


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a dataset of labelled examples (a JSON list or JSON Lines text), checked against a module",
    responses={
        400: {"description": "An example that does not fit the signature (examples.<i>.<field> or line <n>.<field>)"},
        404: {"description": "No such module"},
        409: {"description": "You have a dataset of that name"},
    },
)
async def create_dataset(body: DatasetCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[DatasetOut]:
    return ok(await runtime.dspy_programs.create_dataset(principal, body))


JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "text/plain")


@router.post(
    "/datasets/jsonl",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a dataset as a JSON Lines body (one example per line); name and module in the query",
    openapi_extra={
        "requestBody": {
            "required": True,
            # Documented as text/plain (what OpenAPI tools can send); application/x-ndjson and
            # application/jsonl are taken too.
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "One JSON object per line (text/plain, application/x-ndjson or application/jsonl); "
            "blank lines are skipped but counted.",
        }
    },
    responses={
        400: {"description": "A line that does not fit the signature (line <n>.<field>)"},
        404: {"description": "No such module"},
        409: {"description": "You have a dataset of that name"},
        415: {"description": "The body is not JSON Lines (application/x-ndjson, application/jsonl or text/plain)"},
    },
)
async def upload_dataset_jsonl(
    request: Request,
    principal: Writer,
    runtime: RuntimeDep,
    name: Annotated[str, Query(pattern=RESOURCE_NAME_PATTERN, description="The dataset's name.")],
    module: Annotated[str, Query(min_length=1, max_length=200, description="The module the examples fit.")],
) -> Envelope[DatasetOut]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in JSONL_TYPES:
        raise UnsupportedMediaType(
            f"Send the examples as JSON Lines ({', '.join(JSONL_TYPES[:2])})", details={"content_type": media}
        )
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed.of("body", "JSON Lines must be UTF-8", type="unicode_error") from None
    data = DatasetCreate(name=name, module=module, jsonl=text)
    return ok(await runtime.dspy_programs.create_dataset(principal, data))


@router.get("/datasets", summary="Your datasets")
async def list_datasets(principal: Reader, runtime: RuntimeDep) -> Envelope[list[DatasetOut]]:
    return ok(await runtime.dspy_programs.list_datasets(principal))


@router.get("/datasets/{dataset_id}", summary="One dataset with its examples", responses=NOT_FOUND)
async def get_dataset(dataset_id: Id, principal: Reader, runtime: RuntimeDep) -> Envelope[DatasetOut]:
    return ok(await runtime.dspy_programs.get_dataset(principal, dataset_id))


@router.delete(
    "/datasets/{dataset_id}",
    summary="Delete a dataset no program version was compiled from",
    responses={**NOT_FOUND, 409: {"description": "Versions were compiled from it"}},
)
async def delete_dataset(dataset_id: Id, principal: Writer, runtime: RuntimeDep) -> Envelope[Deleted]:
    await runtime.dspy_programs.delete_dataset(principal, dataset_id)
    return ok(Deleted(id=dataset_id))


@router.post(
    "/programs",
    status_code=status.HTTP_201_CREATED,
    summary="Create a program: a named use of a module, optimized and deployed in versions",
    responses={404: {"description": "No such module"}, 409: {"description": "You have a program of that name"}},
)
async def create_program(body: ProgramCreate, principal: Writer, runtime: RuntimeDep) -> Envelope[ProgramOut]:
    return ok(await runtime.dspy_programs.create_program(principal, body))


@router.get("/programs", summary="Your programs")
async def list_programs(principal: Reader, runtime: RuntimeDep) -> Envelope[list[ProgramOut]]:
    return ok(await runtime.dspy_programs.list_programs(principal))


@router.get("/programs/{program_id}", summary="One program with its versions and their scores", responses=NOT_FOUND)
async def get_program(program_id: Id, principal: Reader, runtime: RuntimeDep) -> Envelope[ProgramOut]:
    return ok(await runtime.dspy_programs.get_program(principal, program_id))


@router.delete(
    "/programs/{program_id}",
    summary="Delete a program and all its versions (its datasets are kept)",
    responses=NOT_FOUND,
)
async def delete_program(program_id: Id, principal: Writer, runtime: RuntimeDep) -> Envelope[Deleted]:
    await runtime.dspy_programs.delete_program(principal, program_id)
    return ok(Deleted(id=program_id))


@router.post(
    "/programs/{program_id}/optimize",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start an optimization cycle (a workflow run: follow it at /api/v1/workflow/status/{run_id})",
    responses={
        400: {
            "description": "A budget over its limit (max_model_calls, max_examples, max_labeled_demos), a bad dataset"
        },
        403: {"description": "The credential lacks the ai scope"},
        404: {"description": "No such program, dataset or model of yours"},
    },
)
async def optimize_program(
    program_id: Id, body: OptimizeRequest, principal: Writer, runtime: RuntimeDep
) -> Envelope[OptimizeStarted]:
    return ok(await runtime.dspy_programs.start_optimization(principal, program_id, body))


@router.post(
    "/programs/{program_id}/deploy",
    summary="Deploy a version, if it beats the deployed one on the held-out test split (or with force)",
    responses={
        **NOT_FOUND,
        409: {"description": "It does not beat the deployed version, or fails its integrity check"},
    },
)
async def deploy_program(
    program_id: Id, body: DeployRequest, principal: Writer, runtime: RuntimeDep
) -> Envelope[ProgramOut]:
    return ok(await runtime.dspy_programs.deploy(principal, program_id, body))


@router.post(
    "/programs/{program_id}/rollback",
    summary="Deploy an earlier version again",
    responses={**NOT_FOUND, 409: {"description": "The version fails its integrity check"}},
)
async def rollback_program(
    program_id: Id, body: RollbackRequest, principal: Writer, runtime: RuntimeDep
) -> Envelope[ProgramOut]:
    return ok(await runtime.dspy_programs.rollback(principal, program_id, body))


@router.post(
    "/programs/{program_id}/run",
    summary="Run the program's deployed version as yourself",
    responses={**RUN_ERRORS, 409: {"description": "No version is deployed, or it fails its integrity check"}},
)
async def run_program(
    program_id: Id, body: ModuleRunRequest, principal: Writer, runtime: RuntimeDep
) -> Envelope[ModuleRunOut]:
    result = await runtime.dspy_programs.run(
        principal, program_id, body.inputs, model=body.model, request_id=current_request_id()
    )
    return ok(result)
