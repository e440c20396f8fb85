"""What a workflow step type is, and what it gets to work with.

A step type is an object with a ``name`` (``http.request``), a pydantic ``Config`` model for its
``with:`` block, a ``side_effects`` flag and an async ``run(ctx, config)`` returning a JSON-able
output. It may instead return ``Suspend`` to park the run until a time or an inbound hook (the
``wait`` step) or a child run (``workflow.call``): the worker lets go of the run meanwhile.

A type may also set ``inline = True`` when it is quick, deterministic and free of side effects
(``transform``): the engine then runs it without a commit of its own, recording it with the next
step's start or the run's end (a crash before that commit simply runs it again).

Step types are discovered through the ``trellis.steps`` entry-point group (``registry.py``), the
built-ins included. Steps are at-least-once: a worker that dies mid-step means the step runs again
on another worker. A step with side effects gets ``ctx.idempotency_key`` (derived from run, step
and attempt) to send along so the far side can drop a repeat.

Failures: raise ``StepFailed`` (``retryable`` says whether the step's retry policy applies). Any
other exception is a retryable failure with its type and message recorded; cancellation arrives as
``asyncio.CancelledError`` and must not be swallowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from trellis.kit.errors import TrellisError

if TYPE_CHECKING:
    from trellis.auth.schemas import Principal
    from trellis.context.search.service import ContextSearch
    from trellis.context.service import ContextService
    from trellis.dspy.programs import ProgramService
    from trellis.dspy.service import DSPyService
    from trellis.gateway.service import Gateway
    from trellis.kit.clock import Clock
    from trellis.kit.outbound import OutboundClient
    from trellis.settings import WorkflowSettings
    from trellis.workflows.n8n import N8nClient


class StepConfig(BaseModel):
    """Base of every step type's ``with:`` model: unknown fields are errors, values are strict."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StepFailed(Exception):
    def __init__(self, message: str, *, retryable: bool = True, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.details = dict(details or {})


@dataclass(frozen=True)
class Suspend:
    """Park the run until ``until`` (a wall-clock time), hook ``hook_id`` is called, or child run
    ``child_run_id`` ends. When ``until`` passes first, the step ends with ``timeout_output`` as its
    output, or fails if ``timeout_fails`` (a hook that never came)."""

    until: datetime | None = None
    hook_id: str | None = None
    child_run_id: str | None = None
    timeout_output: Any = None
    timeout_fails: bool = False

    def as_record(self) -> dict[str, Any]:
        return {
            "until": self.until.isoformat() if self.until else None,
            "hook_id": self.hook_id,
            "child_run_id": self.child_run_id,
            "timeout_output": self.timeout_output,
            "timeout_fails": self.timeout_fails,
        }


@dataclass(frozen=True)
class StepServices:
    """What the product offers step types, built once by the runtime. ``n8n_connection`` gives an
    owner's stored connection by name as (base URL, API key); ``start_child`` starts a sub-run."""

    settings: WorkflowSettings
    gateway: Gateway
    contexts: ContextService
    search: ContextSearch
    outbound: OutboundClient
    n8n: N8nClient
    n8n_connection: Callable[[str, str], Awaitable[tuple[str, str]]]
    start_child: Callable[[StepContext, str, int | None, Any], Awaitable[str]]
    # DSPy modules (the dspy.run step); None where a process builds workflows without them.
    dspy: DSPyService | None = None
    # DSPy programs (the dspy.optimize step).
    dspy_programs: ProgramService | None = None


@dataclass
class StepContext:
    """One attempt of one step. ``emit`` appends an event to the run's log (durably, fenced like every
    write of the run); ``recall(type)`` reads back the data of this step's earlier events of that
    type, from every attempt — how a step resumes what a lost attempt started (``n8n.trigger``
    follows the execution it already triggered instead of triggering another)."""

    run_id: str
    workflow: str
    step_id: str
    attempt: int
    owner: Principal
    clock: Clock
    services: StepServices
    idempotency_key: str
    emit: Callable[[str, Mapping[str, Any]], Awaitable[None]]
    recall: Callable[[str], Awaitable[list[dict[str, Any]]]]


class StepType(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type[StepConfig]]
    side_effects: ClassVar[bool]
    description: ClassVar[str]
    # Optional (read with getattr, default False): see the module docstring.
    # inline: ClassVar[bool]

    async def run(self, ctx: StepContext, config: Any) -> Any: ...


StepFactory = Callable[[], StepType]


def failed_from(exc: TrellisError) -> StepFailed:
    """A product error raised inside a step (the gateway refused, the store said 404) as a step
    failure: server-side and rate-limit errors are worth retrying, the caller's mistakes are not."""
    retryable = exc.status_code >= 500 or exc.status_code == 429
    return StepFailed(exc.message, retryable=retryable, details={"code": exc.code, "status": exc.status_code})
