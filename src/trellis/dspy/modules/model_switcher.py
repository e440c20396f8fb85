"""``model_switcher``: choose a gateway model for a task, split a task across models, run it.

``select_model`` is a rule, not a model call: which model fits is a matter of facts the gateway
has (the models configured, their capabilities, context windows and prices, their breakers and
the latency observed on them), and a small model asked to pick among names it has never seen
would only guess. Every candidate is scored and the answer says why the chosen one won and why
the others lost. ``orchestrate_task`` asks a model to split the task, then selects a model per
part; ``aforward`` runs the task on the selected model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import dspy

from trellis.dspy.modules.base import TrellisModule
from trellis.kit.errors import Unavailable, ValidationFailed
from trellis.settings.gateway import ModelConfig

Complexity = Literal["simple", "moderate", "complex"]
CODE_TASKS = frozenset({"code", "development", "coding", "refactoring", "debugging", "review"})


class LocalTaskSignature(dspy.Signature):  # type: ignore[misc]
    """Carry out the development task as the given role. Answer directly and concisely."""

    task: str = dspy.InputField(desc="what to do")
    task_type: str = dspy.InputField(desc="the kind of task: development, execution, documentation, ...")
    role: str = dspy.InputField(desc="who is asking: developer, reviewer, architect, ...")
    complexity: str = dspy.InputField(desc="simple, moderate or complex")
    result: str = dspy.OutputField(desc="the answer")


class MultiModelOrchestrationSignature(dspy.Signature):  # type: ignore[misc]
    """Split the development task into a few short, independent subtasks."""

    task: str = dspy.InputField()
    task_type: str = dspy.InputField()
    role: str = dspy.InputField()
    subtasks: list[str] = dspy.OutputField(desc="two to five subtasks, each one sentence")


class ModelSwitcherSignature(dspy.Signature):  # type: ignore[misc]
    """Run a task on the gateway model that fits it best, saying which and why."""

    task: str = dspy.InputField(desc="what to do")
    task_type: str = dspy.InputField(default="execution", desc="development, code, execution, documentation, ...")
    role: str = dspy.InputField(default="developer", desc="who is asking")
    complexity: Complexity = dspy.InputField(default="moderate", desc="simple, moderate or complex")
    context_size: int = dspy.InputField(default=0, desc="tokens of context the task needs (0: just the task)")
    result: str = dspy.OutputField(desc="the model's answer")
    model: str = dspy.OutputField(desc="the gateway model that answered")
    reason: str = dspy.OutputField(desc="why that model was chosen")


@dataclass
class Candidate:
    model: str
    score: float
    excluded: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ModelChoice:
    model: str
    reason: str
    candidates: list[Candidate]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "reason": self.reason,
            "candidates": [
                {"model": c.model, "score": round(c.score, 4), "excluded": c.excluded, "notes": c.notes}
                for c in self.candidates
            ],
        }


@dataclass(frozen=True)
class Health:
    breaker: str
    calls: float
    mean_latency: float | None


def _observed_latency(metrics: Any) -> dict[str, tuple[float, float]]:
    """Per served model: (calls, total seconds), from the gateway's latency histogram."""
    totals: dict[str, list[float]] = {}
    for family in metrics.latency.collect():
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            entry = totals.setdefault(model, [0.0, 0.0])
            if sample.name.endswith("_count"):
                entry[0] += sample.value
            elif sample.name.endswith("_sum"):
                entry[1] += sample.value
    return {name: (calls, seconds) for name, (calls, seconds) in totals.items()}


def score_models(
    models: dict[str, ModelConfig],
    health: dict[str, Health],
    *,
    task_type: str,
    complexity: Complexity,
    context_size: int,
) -> ModelChoice:
    """Score every chat model for the task; the best one that is not excluded wins.

    Exclusions: no chat capability; a context window smaller than the task's context plus the
    model's default answer length; an open breaker. Score (higher is better): capability for
    complex tasks (the log of the context window, a proxy for the model's size, weighs more as
    complexity grows), cheapness for simple ones (price per 1k tokens, weighing more as
    complexity falls), a bonus for ``code`` capability on code tasks, a penalty for a half-open
    breaker and for slow observed latency."""
    weight_capability = {"simple": 0.2, "moderate": 0.6, "complex": 1.0}[complexity]
    weight_cost = {"simple": 1.0, "moderate": 0.5, "complex": 0.1}[complexity]
    candidates: list[Candidate] = []
    for name, model in sorted(models.items()):
        candidate = Candidate(name, 0.0)
        candidates.append(candidate)
        if "chat" not in model.capabilities:
            candidate.excluded = "no chat capability"
            continue
        needed = context_size + model.default_max_tokens
        if model.context_window < needed:
            candidate.excluded = f"context window {model.context_window} < {needed} tokens needed"
            continue
        state = health.get(name, Health("closed", 0, None))
        if state.breaker == "open":
            candidate.excluded = "its breaker is open (recent failures)"
            continue
        capability = math.log2(model.context_window) / 17  # 128k tokens: 1.0
        price = model.price_per_1k_input + model.price_per_1k_output
        cheapness = 1.0 / (1.0 + 100 * price)
        candidate.score = weight_capability * capability + weight_cost * cheapness
        candidate.notes.append(f"context window {model.context_window}")
        candidate.notes.append("free" if price == 0 else f"${price:.4f} per 1k tokens in+out")
        if task_type.lower() in CODE_TASKS and "code" in model.capabilities:
            candidate.score += 0.1
            candidate.notes.append("code capability")
        if state.breaker == "half_open":
            candidate.score -= 0.3
            candidate.notes.append("breaker half-open")
        if state.mean_latency is not None and state.calls >= 3:
            candidate.score -= min(0.3, state.mean_latency / 100)
            candidate.notes.append(f"observed mean latency {state.mean_latency:.2f}s over {int(state.calls)} calls")
    usable = [c for c in candidates if c.excluded is None]
    if not usable:
        reasons = {c.model: c.excluded for c in candidates}
        if any(c.excluded and c.excluded.startswith("context window") for c in candidates):
            raise ValidationFailed.of(
                "context_size",
                f"no configured model has a context window for {context_size} tokens",
                type="context_window_exceeded",
                candidates=reasons,
            )
        raise Unavailable("No configured model can take this task right now", details={"candidates": reasons})
    best = max(usable, key=lambda c: (c.score, c.model))
    others = [c for c in usable if c is not best]
    reason = f"{best.model} fits a {complexity} {task_type} task needing {context_size} context tokens: " + ", ".join(
        best.notes
    )
    if others:
        reason += f"; it scored {best.score:.3f} against " + ", ".join(f"{c.model} {c.score:.3f}" for c in others)
    excluded = [c for c in candidates if c.excluded is not None]
    if excluded:
        reason += "; excluded: " + ", ".join(f"{c.model} ({c.excluded})" for c in excluded)
    return ModelChoice(best.model, reason, candidates)


class ModelSwitcher(TrellisModule):
    signature: ClassVar[type[dspy.Signature]] = ModelSwitcherSignature
    description: ClassVar[str] = (
        "Chooses the gateway model that fits a task (capability, context window, cost, observed health), "
        "says why, and runs the task on it."
    )

    def __init__(self, deps: Any) -> None:
        super().__init__(deps)
        self.execute = dspy.Predict(LocalTaskSignature)
        self.orchestrate = dspy.Predict(MultiModelOrchestrationSignature)

    async def health(self) -> dict[str, Health]:
        gateway = self.deps.gateway
        observed = _observed_latency(gateway.metrics)
        result: dict[str, Health] = {}
        for name, model in gateway.models.items():
            calls, seconds = observed.get(name, (0.0, 0.0))
            result[name] = Health(await gateway.breaker_state(model), calls, seconds / calls if calls else None)
        return result

    async def select_model(
        self, task: str, task_type: str = "execution", complexity: Complexity = "moderate", context_size: int = 0
    ) -> ModelChoice:
        del task  # the choice rests on the task's kind, size and complexity, not its words
        return score_models(
            self.deps.gateway.models,
            await self.health(),
            task_type=task_type,
            complexity=complexity,
            context_size=context_size,
        )

    async def orchestrate_task(
        self, task: str, task_type: str = "development", role: str = "developer"
    ) -> dict[str, Any]:
        """Split the task (a model call), then choose a model for each part."""
        split = await self.orchestrate.acall(task=task, task_type=task_type, role=role)
        subtasks = [str(s).strip() for s in (split.subtasks or []) if str(s).strip()] or [task]
        plan = []
        for subtask in subtasks:
            choice = await self.select_model(subtask, task_type, "simple" if len(subtasks) > 1 else "moderate")
            plan.append({"subtask": subtask, "model": choice.model, "reason": choice.reason})
        return {"task": task, "subtasks": plan}

    async def aforward(  # type: ignore[override]
        self,
        task: str,
        task_type: str = "execution",
        role: str = "developer",
        complexity: Complexity = "moderate",
        context_size: int = 0,
    ) -> dspy.Prediction:
        choice = await self.select_model(task, task_type, complexity, context_size)
        with dspy.context(lm=self.deps.lm_for(choice.model)):
            answer = await self.execute.acall(task=task, task_type=task_type, role=role, complexity=complexity)
        return dspy.Prediction(result=answer.result, model=choice.model, reason=choice.reason)
