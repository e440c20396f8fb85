"""``role_refinement``: a ``role_definition`` context refined from performance metrics.

The refined definition is saved as the next version of that same context (compare-and-set on the
version read, so a concurrent edit is a 409, never overwritten); the answer carries both versions.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import dspy

from trellis.context.schemas import ContextUpdate
from trellis.dspy.modules.base import BadModelOutput, TrellisModule
from trellis.kit.errors import ValidationFailed

ROLE_TYPE = "role_definition"
MIN_DEFINITION_CHARS = 20


class RoleRefinementSignature(dspy.Signature):  # type: ignore[misc]
    """Improve the role definition so the metrics that are weak get better. Keep what works."""

    role_type: str = dspy.InputField()
    current_definition: str = dspy.InputField()
    performance_metrics: str = dspy.InputField(desc="JSON: metric name to value (0-1, higher is better)")
    solo_developer_context: str = dspy.InputField()
    refined_definition: str = dspy.OutputField(desc="the complete improved role definition")
    rationale: str = dspy.OutputField(desc="what changed and why, briefly")


class RoleRefinementInterface(dspy.Signature):  # type: ignore[misc]
    """Refine a role_definition context from performance metrics; save it as a new version."""

    context_id: str = dspy.InputField(desc="a role_definition context of the caller")
    performance_metrics: dict[str, float] = dspy.InputField(desc="metric name to value, 0-1")
    solo_developer_context: str = dspy.InputField(default="Local development with resource constraints")
    refined_definition: str = dspy.OutputField()
    rationale: str = dspy.OutputField()
    refined_context_id: str = dspy.OutputField(desc="the context refined")
    previous_version: int = dspy.OutputField()
    version: int = dspy.OutputField(desc="the version saved")


class RoleRefinementModule(TrellisModule):
    signature: ClassVar[type[dspy.Signature]] = RoleRefinementInterface
    description: ClassVar[str] = "Refines a role_definition context from performance metrics (saved as a new version)."
    writes: ClassVar[bool] = True

    def __init__(self, deps: Any) -> None:
        super().__init__(deps)
        self.refine = dspy.Predict(RoleRefinementSignature)

    async def aforward(  # type: ignore[override]
        self,
        context_id: str,
        performance_metrics: dict[str, float],
        solo_developer_context: str = "Local development with resource constraints",
    ) -> dspy.Prediction:
        caller = self.deps.caller
        # The refined definition is written back: the caller's own role only (an administrator may
        # read any user's context, but not change it), checked before the model is called.
        current = await self.deps.contexts.get_own(caller.principal, context_id)
        if current.type != ROLE_TYPE:
            raise ValidationFailed.of(
                "context_id", f"is a {current.type!r} context, not a {ROLE_TYPE!r} one", type="context_type"
            )
        role_type = str((current.meta or {}).get("role") or (current.meta or {}).get("role_type") or "developer")
        refined = await self.refine.acall(
            role_type=role_type,
            current_definition=current.content,
            performance_metrics=json.dumps(performance_metrics, sort_keys=True),
            solo_developer_context=solo_developer_context,
        )
        text = str(refined.refined_definition or "").strip()
        if len(text) < MIN_DEFINITION_CHARS:
            raise BadModelOutput(
                "The model's refined definition is too short to replace the current one; nothing was saved",
                details={"refined_definition": text},
            )
        saved = await self.deps.contexts.update(
            caller.principal, context_id, ContextUpdate(content=text), expected_version=current.version
        )
        return dspy.Prediction(
            refined_definition=text,
            rationale=str(refined.rationale or "").strip(),
            refined_context_id=saved.id,
            previous_version=current.version,
            version=saved.version,
        )
