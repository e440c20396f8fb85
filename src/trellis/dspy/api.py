"""REST door for DSPy modules: ``/api/v1/dspy/modules`` (list, describe, run) and
``/api/v1/dspy/workflows`` (list, run). Parse, call ``DSPyService``, shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from trellis.auth.deps import Reader, RuntimeDep, Writer
from trellis.dspy.schemas import ModuleOut, ModuleRunOut, ModuleRunRequest, WorkflowOut, WorkflowRunOut
from trellis.kit.envelope import Envelope, ok
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
