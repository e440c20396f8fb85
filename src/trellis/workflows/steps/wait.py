"""``wait``: pause the run without holding a worker. ``with: {seconds: N}`` waits N seconds;
``with: {hook: <hook id>}`` waits until that ``resume`` hook is called for this run (its JSON body's
``data`` becomes the output), failing after ``timeout_seconds`` if given. Waits survive restarts: the
wake-up time is in the database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, model_validator

from trellis.workflows.steps.base import StepConfig, StepContext, StepFailed, Suspend


class WaitConfig(StepConfig):
    seconds: Annotated[float, Field(ge=0)] | None = None
    hook: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> WaitConfig:
        if (self.seconds is None) == (self.hook is None):
            raise ValueError("give either seconds (a duration) or hook (an inbound hook id)")
        settings = (info.context or {}).get("settings")
        longest = settings.max_wait_seconds if settings is not None else None
        for name in ("seconds", "timeout_seconds"):
            value = getattr(self, name)
            if longest is not None and value is not None and value > longest:
                raise ValueError(f"{name} is over the maximum wait of {longest:g} seconds")
        return self


class WaitStep:
    name: ClassVar[str] = "wait"
    Config: ClassVar[type[StepConfig]] = WaitConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Wait a number of seconds, or for an inbound hook."

    async def run(self, ctx: StepContext, config: WaitConfig) -> Any:
        now = ctx.clock.now()
        if config.seconds is not None:
            return Suspend(
                until=now + timedelta(seconds=config.seconds), timeout_output={"waited_seconds": config.seconds}
            )
        if config.hook is None:
            raise StepFailed("wait: no hook", retryable=False)
        until = now + timedelta(seconds=config.timeout_seconds) if config.timeout_seconds else None
        return Suspend(until=until, hook_id=config.hook, timeout_fails=True)
