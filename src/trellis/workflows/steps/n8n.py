"""``n8n.trigger``: start an n8n workflow through its Webhook node and follow the execution to its
end. ``with: {connection: NAME, path: WEBHOOK_PATH, payload: …, wait: true}``: the connection (base
URL and API key, stored per user, the key encrypted) is one of the owner's
(``/api/v1/n8n/connections``). The payload gets ``trellis`` = ``{run_id, step, attempt,
idempotency_key}`` so the n8n workflow can call back (a ``resume`` hook). Output:
``{execution_id, status, result}``, or the webhook's own answer when it returns no execution id
or ``wait`` is false. n8n's ``error``/``crashed``/``canceled`` fail the step.

n8n does not deduplicate webhook calls, so an attempt that finds an execution an earlier attempt
started (the worker died while following it, or following it failed for a while) follows that one
instead of triggering again, unless it has ended in failure.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from trellis.kit.errors import TrellisError
from trellis.workflows.n8n import N8nError, N8nExecution
from trellis.workflows.steps.base import StepConfig, StepContext, StepFailed, failed_from


class N8nTriggerConfig(StepConfig):
    connection: Annotated[str, Field(min_length=1, max_length=128)]
    path: Annotated[str, Field(min_length=1, max_length=1024)]
    payload: Any = Field(default_factory=dict)
    wait: bool = True


class N8nTriggerStep:
    name: ClassVar[str] = "n8n.trigger"
    Config: ClassVar[type[StepConfig]] = N8nTriggerConfig
    side_effects: ClassVar[bool] = True
    description: ClassVar[str] = "Call an n8n Webhook node and follow the execution until it ends."

    async def run(self, ctx: StepContext, config: N8nTriggerConfig) -> Any:
        services = ctx.services
        try:
            base_url, api_key = await services.n8n_connection(ctx.owner.user_id, config.connection)
        except TrellisError as exc:
            raise failed_from(exc) from None
        trellis = {
            "run_id": ctx.run_id,
            "step": ctx.step_id,
            "attempt": ctx.attempt,
            "idempotency_key": ctx.idempotency_key,
        }
        payload = {**config.payload, "trellis": trellis} if isinstance(config.payload, dict) else config.payload
        try:
            execution_id = await self._started_before(ctx, base_url, api_key) if config.wait else None
            if execution_id is None:
                execution_id, answer = await services.n8n.trigger(
                    base_url, config.path, payload, idempotency_key=ctx.idempotency_key
                )
                if execution_id is None or not config.wait:
                    return {"execution_id": execution_id, "status": None, "result": answer}
                await ctx.emit("n8n.started", {"execution_id": execution_id})

            async def seen(execution: N8nExecution) -> None:
                await ctx.emit("n8n.status", {"execution_id": execution.id, "status": execution.status})

            done = await services.n8n.follow(base_url, api_key, execution_id, on_status=seen)
        except N8nError as exc:
            raise StepFailed(
                f"n8n: {exc.message}",
                retryable=exc.retryable,
                details={"n8n_status": exc.n8n_status, "http_status": exc.http_status},
            ) from None
        except TrellisError as exc:
            raise failed_from(exc) from None
        return {"execution_id": done.id, "status": done.status, "result": done.result}

    @staticmethod
    async def _started_before(ctx: StepContext, base_url: str, api_key: str) -> str | None:
        """The execution an earlier attempt of this step started, if it is still worth following."""
        earlier = await ctx.recall("n8n.started")
        if not earlier:
            return None
        execution_id = str(earlier[-1]["execution_id"])
        try:
            current = await ctx.services.n8n.execution(base_url, api_key, execution_id)
        except N8nError as exc:
            # Not found (or the key refused): start afresh. A passing failure: follow it, riding it out.
            return execution_id if exc.retryable else None
        if current.finished and current.status != "success":
            return None  # it failed: this attempt is the retry
        return execution_id
