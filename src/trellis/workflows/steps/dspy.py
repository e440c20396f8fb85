"""``dspy.run``: a DSPy module (or a runnable module workflow) as a workflow step, run as the run's
owner through the same service as ``POST /api/v1/dspy/modules/{name}/run``; its model calls are in
the episodic log with door ``dspy`` and the module's name. ``with:`` takes ``module`` (or
``workflow``), ``inputs`` and optionally ``model``; the output is the module's outputs with
``module``, ``model`` and ``execution_time``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationError, model_validator

from trellis.dspy.schemas import OptimizeRequest
from trellis.kit.errors import TrellisError
from trellis.workflows.steps.base import StepConfig, StepContext, StepFailed, failed_from


class DSPyRunConfig(StepConfig):
    module: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    workflow: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> DSPyRunConfig:
        if (self.module is None) == (self.workflow is None):
            raise ValueError("give exactly one of module or workflow")
        return self


class DSPyRunStep:
    name: ClassVar[str] = "dspy.run"
    Config: ClassVar[type[StepConfig]] = DSPyRunConfig
    side_effects: ClassVar[bool] = True  # role_refinement writes a context version
    description: ClassVar[str] = "Run a DSPy module (or module workflow) through the gateway as the run's owner."

    async def run(self, ctx: StepContext, config: DSPyRunConfig) -> Any:
        service = ctx.services.dspy
        if service is None:
            raise StepFailed("DSPy modules are not available in this process", retryable=False)
        request_id = f"{ctx.run_id}:{ctx.step_id}"
        try:
            if config.module is not None:
                result = await service.run_module(
                    ctx.owner, config.module, config.inputs, model=config.model, request_id=request_id
                )
                return {
                    **(result.data or {}),
                    "module": result.module,
                    "model": result.model,
                    "execution_time": result.execution_time,
                }
            assert config.workflow is not None
            flow = await service.run_workflow(
                ctx.owner, config.workflow, config.inputs, model=config.model, request_id=request_id
            )
            return {**(flow.data or {}), "workflow": flow.workflow, "execution_time": flow.execution_time}
        except TrellisError as exc:
            raise failed_from(exc) from None


class DSPyOptimizeConfig(StepConfig):
    program_id: Annotated[str, Field(min_length=1, max_length=40)]
    request: dict[str, Any]


class DSPyOptimizeStep:
    """``dspy.optimize``: one optimization cycle of a DSPy program (``ProgramService.optimize``),
    as the run's owner. Queued by ``POST /api/v1/dspy/programs/{id}/optimize`` as the internal
    workflow ``dspy.optimize``; its progress is in the run's events (``dspy.split``,
    ``dspy.evaluated``, ``dspy.compiling``, ``dspy.compiled``, ``dspy.stored``). A cycle that fails
    (an open breaker, the budget spent, a bad request) fails the step without a retry and stores
    nothing."""

    name: ClassVar[str] = "dspy.optimize"
    Config: ClassVar[type[StepConfig]] = DSPyOptimizeConfig
    side_effects: ClassVar[bool] = True  # stores a version, may deploy it
    description: ClassVar[str] = "Optimize a DSPy program on a dataset; store (and maybe deploy) the new version."

    async def run(self, ctx: StepContext, config: DSPyOptimizeConfig) -> Any:
        programs = ctx.services.dspy_programs
        if programs is None:
            raise StepFailed("DSPy programs are not available in this process", retryable=False)
        try:
            request = OptimizeRequest.model_validate(config.request)
        except ValidationError as exc:
            raise StepFailed(f"invalid optimization request: {exc.errors()[0]['msg']}", retryable=False) from None
        try:
            out = await programs.optimize(ctx.owner, config.program_id, request, run_id=ctx.run_id, report=ctx.emit)
        except TrellisError as exc:
            failed = failed_from(exc)
            failed.retryable = False  # a cycle is not replayed: its caller starts another
            raise failed from None
        return out.model_dump(mode="json")
