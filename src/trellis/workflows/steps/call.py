"""``workflow.call``: run another workflow of the same owner as a sub-run and wait for it without
holding a worker. ``with: {workflow: NAME, version: N?, input: …}``; the output is the sub-run's
result, and a sub-run that fails or is cancelled fails this step. Repeated attempts of the step
reuse the same sub-run (its idempotency key is derived from this run and step).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from trellis.kit.errors import TrellisError
from trellis.workflows.steps.base import StepConfig, StepContext, Suspend, failed_from


class CallConfig(StepConfig):
    workflow: Annotated[str, Field(min_length=1, max_length=128)]
    version: Annotated[int, Field(ge=1)] | None = None
    input: Any = Field(default_factory=dict)


class WorkflowCallStep:
    name: ClassVar[str] = "workflow.call"
    Config: ClassVar[type[StepConfig]] = CallConfig
    side_effects: ClassVar[bool] = True
    description: ClassVar[str] = "Run another workflow as a sub-run and wait for its result."

    async def run(self, ctx: StepContext, config: CallConfig) -> Any:
        try:
            child = await ctx.services.start_child(ctx, config.workflow, config.version, config.input)
        except TrellisError as exc:
            raise failed_from(exc) from None
        return Suspend(child_run_id=child)
