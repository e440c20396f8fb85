"""The workflow language: what a definition may say, and the checks it passes before it is saved.

A definition (JSON or YAML) is a list of steps forming a graph::

    description: Greets someone
    input_schema: {type: object, required: [name], properties: {name: {type: string}}}
    steps:
      - id: greet
        type: transform
        with: {value: "Hello, {{ input.name }}!"}
    output: "{{ steps.greet.output }}"

Each step runs after the steps in its ``needs`` (by default the step before it in the list, so a
plain list runs in order; ``needs: []`` starts a parallel branch). ``if`` skips a step whose
condition is false; ``retry`` (attempts, backoff) and ``timeout_seconds`` bound each attempt;
``on_error`` says what a step's final failure does: ``fail`` the run, ``continue`` with a null
output, or run the ``fallback`` step in its place (a step named as a fallback runs only as one).
A ``map`` step runs its inner ``step`` once per element of ``over`` (``item`` and ``index`` in its
templates), at most ``concurrency`` at a time; its output is the list of the inner outputs.

``validate_definition`` refuses, with a 400 naming the step and the field: an unknown step type or
field, a ``needs``/``fallback``/template reference to a step that does not exist or does not run
before, a cycle, a template that does not parse, a name templates do not know, and a ``with:``
value its step type refuses.
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trellis.kit.errors import FieldError, ValidationFailed
from trellis.settings import WorkflowSettings
from trellis.workflows import templates
from trellis.workflows.steps.registry import MAP_STEP, StepRegistry

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
MAX_STEPS = 200
_STEP_ID = re.compile(STEP_ID_PATTERN)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempts: Annotated[int, Field(ge=1, le=20, description="Attempts in all, the first included.")] = 1
    backoff_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0
    backoff_multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0
    max_backoff_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1-based) failed."""
        return float(
            min(self.backoff_seconds * self.backoff_multiplier ** (failed_attempt - 1), self.max_backoff_seconds)
        )


class InnerStep(BaseModel):
    """The step a ``map`` runs per element."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Annotated[str, Field(min_length=1, max_length=64)]
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    retry: RetryPolicy | None = None


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: Annotated[str, Field(pattern=STEP_ID_PATTERN, description="Letters, digits and _; used as steps.<id>.")]
    type: Annotated[str, Field(min_length=1, max_length=64)]
    description: Annotated[str, Field(max_length=2000)] | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] | None = Field(default=None, description="Steps this one runs after; default: the previous.")
    if_: str | None = Field(default=None, alias="if", description="A condition template; false skips the step.")
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    retry: RetryPolicy | None = None
    on_error: Literal["fail", "continue", "fallback"] = "fail"
    fallback: str | None = None
    # map only
    over: Any = None
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    step: InnerStep | None = None


class WorkflowDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Annotated[str, Field(max_length=4000)] | None = None
    input_schema: dict[str, Any] | None = None
    steps: Annotated[list[StepSpec], Field(min_length=1, max_length=MAX_STEPS)]
    output: Any = None

    def step(self, step_id: str) -> StepSpec:
        for spec in self.steps:
            if spec.id == step_id:
                return spec
        raise KeyError(step_id)

    @property
    def fallback_only(self) -> set[str]:
        return {spec.fallback for spec in self.steps if spec.fallback is not None}

    def scheduled(self) -> list[StepSpec]:
        """Steps that run in the normal flow (not only as another's fallback), in list order."""
        only = self.fallback_only
        return [spec for spec in self.steps if spec.id not in only]

    def needs_of(self) -> dict[str, list[str]]:
        """Each scheduled step's prerequisites, with the default (the previous scheduled step) filled in."""
        result: dict[str, list[str]] = {}
        previous: str | None = None
        for spec in self.scheduled():
            result[spec.id] = list(spec.needs) if spec.needs is not None else ([previous] if previous else [])
            previous = spec.id
        return result


class _Problems:
    def __init__(self) -> None:
        self.fields: list[FieldError] = []

    def add(self, field: str, message: str, type: str = "value_error") -> None:
        self.fields.append({"field": field, "message": message, "location": "body", "type": type})

    def raise_if_any(self) -> None:
        if self.fields:
            first = self.fields[0]["message"]
            raise ValidationFailed.of_fields(self.fields, summary=f"Invalid workflow definition: {first}")


def parse_definition(
    raw: Any, registry: StepRegistry, *, settings: WorkflowSettings | None = None, field_prefix: str = "definition"
) -> WorkflowDefinition:
    """The definition in ``raw`` (already decoded JSON/YAML), checked (see the module docstring)."""
    problems = _Problems()
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = ".".join(str(part) for part in error["loc"])
            where = _describe(raw, error["loc"])
            problems.add(f"{field_prefix}.{loc}" if loc else field_prefix, f"{where}{error['msg']}", error["type"])
        problems.raise_if_any()
        raise AssertionError("unreachable") from None
    _check(definition, registry, problems, field_prefix, {"settings": settings})
    problems.raise_if_any()
    return definition


def _describe(raw: Any, loc: tuple[Any, ...]) -> str:
    """``step 'fetch': `` when an error is inside a step whose id can be read."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) and isinstance(raw, dict):
        steps = raw.get("steps")
        if isinstance(steps, list) and loc[1] < len(steps) and isinstance(steps[loc[1]], dict):
            step_id = steps[loc[1]].get("id")
            if isinstance(step_id, str):
                return f"step {step_id!r}: "
    return ""


def _check(
    definition: WorkflowDefinition, registry: StepRegistry, problems: _Problems, prefix: str, context: dict[str, Any]
) -> None:
    index_of: dict[str, int] = {}
    for index, spec in enumerate(definition.steps):
        if spec.id in index_of:
            problems.add(f"{prefix}.steps.{index}.id", f"step {spec.id!r}: the id is used twice", "duplicate")
        index_of.setdefault(spec.id, index)

    if definition.input_schema is not None:
        try:
            jsonschema.validators.validator_for(definition.input_schema).check_schema(definition.input_schema)
        except jsonschema.SchemaError as exc:
            problems.add(f"{prefix}.input_schema", f"not a valid JSON Schema: {exc.message}", "schema_invalid")

    fallback_only = definition.fallback_only
    for index, spec in enumerate(definition.steps):
        where = f"{prefix}.steps.{index}"
        label = f"step {spec.id!r}"
        if spec.on_error == "fallback" and spec.fallback is None:
            problems.add(f"{where}.fallback", f"{label}: on_error 'fallback' needs a fallback step", "missing")
        if spec.fallback is not None:
            if spec.on_error != "fallback":
                problems.add(f"{where}.on_error", f"{label}: a fallback is given, so on_error must be 'fallback'")
            if spec.fallback not in index_of:
                problems.add(f"{where}.fallback", f"{label}: no step named {spec.fallback!r}", "unknown_reference")
            elif spec.fallback == spec.id:
                problems.add(f"{where}.fallback", f"{label}: a step cannot be its own fallback", "cycle")
            elif definition.steps[index_of[spec.fallback]].fallback is not None:
                problems.add(f"{where}.fallback", f"{label}: fallback {spec.fallback!r} has a fallback of its own")
        if spec.id in fallback_only and spec.needs:
            problems.add(f"{where}.needs", f"{label}: a fallback step runs in place of another; it needs nothing")
        _check_type(spec, registry, problems, where, label, context)

    needs = definition.needs_of()
    for index, spec in enumerate(definition.steps):
        for position, need in enumerate(spec.needs or ()):
            if need not in index_of:
                problems.add(
                    f"{prefix}.steps.{index}.needs.{position}",
                    f"step {spec.id!r}: no step named {need!r}",
                    "unknown_reference",
                )
            elif need in fallback_only:
                problems.add(
                    f"{prefix}.steps.{index}.needs.{position}",
                    f"step {spec.id!r}: {need!r} runs only as a fallback; need the step it stands in for",
                    "unknown_reference",
                )
    if problems.fields:
        return
    sorter = graphlib.TopologicalSorter(needs)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = list(dict.fromkeys(exc.args[1]))
        first = cycle[0]
        problems.add(
            f"{prefix}.steps.{index_of[first]}.needs",
            f"step {first!r}: the steps {' → '.join([*cycle, first])} need each other (a cycle)",
            "cycle",
        )
        return

    ancestors = _ancestors(needs)
    for spec in definition.steps:
        stand_in_for = [s.id for s in definition.steps if s.fallback == spec.id]
        if spec.id in fallback_only:
            visible = set().union(*(ancestors[s] for s in stand_in_for)) if stand_in_for else set()
        else:
            visible = ancestors[spec.id]
        extra_roots = {"error"} if spec.id in fallback_only else set()
        where = f"{prefix}.steps.{index_of[spec.id]}"
        label = f"step {spec.id!r}"
        _check_templates(spec.with_, f"{where}.with", label, visible, extra_roots, problems)
        if spec.if_ is not None:
            _check_templates(spec.if_, f"{where}.if", label, visible, extra_roots, problems)
        if spec.type == MAP_STEP:
            _check_templates(spec.over, f"{where}.over", label, visible, extra_roots, problems)
            if spec.step is not None:
                _check_templates(
                    spec.step.with_, f"{where}.step.with", label, visible, extra_roots | {"item", "index"}, problems
                )
    _check_templates(definition.output, f"{prefix}.output", "output", set(needs), set(), problems)


def _check_type(
    spec: StepSpec, registry: StepRegistry, problems: _Problems, where: str, label: str, context: dict[str, Any]
) -> None:
    if not registry.knows(spec.type):
        problems.add(
            f"{where}.type",
            f"{label}: unknown step type {spec.type!r}; known: {', '.join(registry.names)}",
            "unknown_step_type",
        )
        return
    if spec.type == MAP_STEP:
        if spec.over is None:
            problems.add(f"{where}.over", f"{label}: a map needs 'over', the list to run over", "missing")
        if spec.step is None:
            problems.add(f"{where}.step", f"{label}: a map needs 'step', what to run per element", "missing")
            return
        if spec.with_:
            problems.add(f"{where}.with", f"{label}: a map takes 'over' and 'step', not 'with'")
        if spec.step.type == MAP_STEP or not registry.knows(spec.step.type):
            problems.add(
                f"{where}.step.type",
                f"{label}: unknown step type {spec.step.type!r} for the map's inner step",
                "unknown_step_type",
            )
            return
        check_config(registry, spec.step.type, spec.step.with_, problems, f"{where}.step.with", label, context)
        return
    for name in ("over", "step"):
        if getattr(spec, name) is not None:
            problems.add(f"{where}.{name}", f"{label}: '{name}' is for map steps only", "extra_forbidden")
    check_config(registry, spec.type, spec.with_, problems, f"{where}.with", label, context)


def check_config(
    registry: StepRegistry,
    step_type: str,
    values: dict[str, Any],
    problems: _Problems,
    where: str,
    label: str,
    context: dict[str, Any],
) -> None:
    """Validate a ``with:`` block against its step type's model, leaving templated values to run time."""
    config_model = registry.get(step_type).Config
    try:
        config_model.model_validate(values, context=context)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            if loc and loc[0] in values and _templated(values[loc[0]]):
                continue  # checked when the run renders it
            path = ".".join(str(part) for part in loc)
            problems.add(f"{where}.{path}" if path else where, f"{label}: {error['msg']}", error["type"])


def _templated(value: Any) -> bool:
    return any(True for _ in templates.strings_in(value))


def _check_templates(
    value: Any, where: str, label: str, visible: set[str], extra_roots: set[str], problems: _Problems
) -> None:
    allowed_roots = {"input", "steps", "run"} | extra_roots
    for path, source in templates.strings_in(value):
        field = f"{where}.{path}" if path else where
        try:
            roots, step_ids = templates.references(source)
            bound = templates.locally_bound(source) | templates.builtin_names()
        except templates.TemplateProblem as exc:
            problems.add(field, f"{label}: {exc}", "template_syntax")
            continue
        for root in sorted(roots - allowed_roots - bound):
            problems.add(
                field,
                f"{label}: unknown name {root!r} in a template (known: {', '.join(sorted(allowed_roots))})",
                "unknown_reference",
            )
        for step_id in sorted(step_ids):
            if step_id not in visible:
                problems.add(
                    field, f"{label}: steps.{step_id} is not a step that runs before this one", "unknown_reference"
                )


def _ancestors(needs: dict[str, list[str]]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for node in graphlib.TopologicalSorter(needs).static_order():
        found: set[str] = set()
        for parent in needs.get(node, ()):
            found.add(parent)
            found |= result.get(parent, set())
        result[node] = found
    return result


def referenced_steps(values: Iterable[Any]) -> set[str]:
    found: set[str] = set()
    for value in values:
        for _, source in templates.strings_in(value):
            found |= templates.references(source)[1]
    return found


def valid_step_id(value: str) -> bool:
    return _STEP_ID.match(value) is not None


def load_text(text: str, *, field: str = "definition") -> Any:
    """JSON or YAML text as data (YAML's safe loader: no Python objects), for files and uploads."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed.of(field, f"not valid YAML or JSON: {exc}", type="yaml_invalid") from None
