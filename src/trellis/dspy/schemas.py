"""Request and response shapes of the DSPy doors: modules, module workflows, runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from trellis.kit.requests import RequestModel

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class FieldOut(BaseModel):
    name: str
    type: str = Field(description="The field's Python type, as the signature declares it.")
    description: str | None = None
    required: bool
    default: Any = None


class ModuleOut(BaseModel):
    name: str = Field(description="The name modules are run by (the entry point's name).")
    module_type: str = Field(description="The module's class name.")
    description: str
    writes: bool = Field(description="A run changes stored data (needs the write scope besides ai).")
    instructions: str = Field(description="The signature's instructions.")
    inputs: list[FieldOut]
    outputs: list[FieldOut]


class StageOut(BaseModel):
    name: str
    module: str


class WorkflowOut(BaseModel):
    name: str
    description: str
    runnable: bool = Field(description="True when POST .../run chains the stages; else call the modules one by one.")
    stages: list[StageOut]


class ModuleRunRequest(RequestModel):
    inputs: dict[str, Any] = Field(default_factory=dict, description="The module's input fields, by name.")
    model: ModelName | None = Field(
        default=None, description="The gateway model the module's predictors use (default: [dspy] default_model)."
    )


class ModuleError(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ModuleRunOut(BaseModel):
    """The seed's standard module result: ``{success, data | error, module_type, execution_time}``."""

    success: bool
    data: dict[str, Any] | None = None
    error: ModuleError | None = None
    module: str
    module_type: str
    execution_time: float = Field(description="Seconds the module ran, measured around the call.")
    model: str = Field(description="The gateway model the module's predictors used by default.")


class WorkflowRunOut(BaseModel):
    workflow: str
    success: bool
    stages: dict[str, ModuleRunOut]
    data: dict[str, Any] | None = Field(description="The last stage's outputs.")
    execution_time: float


# --- datasets, programs, versions -------------------------------------------------------------------

RESOURCE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
ResourceName = Annotated[str, StringConstraints(pattern=RESOURCE_NAME_PATTERN)]
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class DatasetCreate(RequestModel):
    """Exactly one of ``examples`` (a JSON list of objects) and ``jsonl`` (JSON Lines text: one
    object per line; blank lines are skipped but counted, so errors name the file's line)."""

    name: ResourceName = Field(description="Unique among your datasets: letters, digits, '_', '-', '.'.")
    module: ModuleName = Field(description="The registered module whose signature the examples fit.")
    examples: list[Any] | None = Field(default=None, description="The examples: objects of signature fields.")
    jsonl: str | None = Field(default=None, description="The examples as JSON Lines text.")


class DatasetOut(BaseModel):
    id: str
    name: str
    module: str
    size: int = Field(description="How many examples it holds.")
    created_at: datetime
    examples: list[dict[str, Any]] | None = Field(default=None, description="The examples (GET of one dataset).")


class ProgramCreate(RequestModel):
    name: ResourceName = Field(description="Unique among your programs: letters, digits, '_', '-', '.'.")
    module: ModuleName = Field(description="The registered module the program optimizes.")
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None


class VersionOut(BaseModel):
    version: int
    intact: bool = Field(description="False when the stored document does not match its tag (refused to load).")
    deployed: bool
    dataset_id: str
    split: dict[str, int] | None = Field(description="Examples in train, dev and test.")
    seed: int | None = None
    optimizer: str | None = None
    optimizer_params: dict[str, Any] | None = None
    model: str | None = None
    scores: dict[str, dict[str, float]] | None = Field(
        default=None, description="baseline and optimized, each on dev and test (the held-out split)."
    )
    demos: int | None = None
    model_calls: int | None = None
    run_id: str | None = None
    created_at: datetime


class ProgramOut(BaseModel):
    id: str
    name: str
    module: str
    description: str | None
    deployed_version: int | None
    latest_version: int = Field(description="0 until an optimization run has finished.")
    created_at: datetime
    updated_at: datetime
    versions: list[VersionOut] | None = Field(default=None, description="Every version (GET of one program).")


OptimizerName = Literal["bootstrap_few_shot", "labeled_few_shot", "miprov2_light", "gepa"]


class OptimizeRequest(RequestModel):
    """One optimization cycle. The optimizer's own parameters are checked against it: one the
    chosen optimizer does not use is a 400 naming it (never ignored)."""

    dataset_id: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    optimizer: OptimizerName = Field(
        default="bootstrap_few_shot",
        description="bootstrap_few_shot (DSPy's BootstrapFewShot), labeled_few_shot (demos from train, no "
        "model calls to compile), miprov2_light (MIPROv2, auto='light': instructions and demos searched with "
        "Optuna) or gepa (GEPA: instructions evolved by a reflection model from the metric's feedback).",
    )
    metric_fields: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        default=None, description="The output fields the exact-match metric compares (default: every labelled one)."
    )
    max_bootstrapped_demos: Annotated[int, Field(ge=0, le=32)] | None = Field(
        default=None, description="bootstrap_few_shot, miprov2_light: traces kept as demos (default 4)."
    )
    max_labeled_demos: Annotated[int, Field(ge=0, le=32)] | None = Field(
        default=None,
        description="bootstrap_few_shot, labeled_few_shot, miprov2_light: demos straight from train. "
        "Default (and at most): [dspy] max_demos.",
    )
    max_rounds: Annotated[int, Field(ge=1, le=10)] | None = Field(
        default=None, description="bootstrap_few_shot: passes over train while bootstrapping (default 1)."
    )
    max_metric_calls: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None,
        description="gepa: the module runs GEPA's search may make (GEPA's max_metric_calls; default: its "
        "'light' budget for this dataset).",
    )
    reflection_model: ModelName | None = Field(
        default=None, description="gepa: the gateway model that reflects and proposes instructions (default: model)."
    )
    reflection_minibatch_size: Annotated[int, Field(ge=1, le=32)] | None = Field(
        default=None, description="gepa: train examples shown to the reflection model per step (default 3)."
    )
    max_examples: Annotated[int, Field(ge=5)] | None = Field(
        default=None,
        description="The most examples the run may use (a larger dataset is a 400, never cut silently); "
        "at most [dspy] optimize_max_examples, the default.",
    )
    max_model_calls: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="The run's model-call budget; at most [dspy] optimize_max_model_calls (the default)."
    )
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    model: ModelName | None = Field(default=None, description="The gateway model (default: [dspy] default_model).")
    deploy: bool = Field(default=True, description="Deploy the new version if it beats the deployed one on test.")


class OptimizeStarted(BaseModel):
    run_id: str = Field(
        description="The workflow run doing the cycle: GET /api/v1/workflow/status/{run_id}; its progress "
        "events at /api/v1/workflow/{run_id}/events."
    )
    program_id: str
    status: str
    estimated_model_calls: int


class OptimizeOut(BaseModel):
    """What a finished cycle made (the ``dspy.optimize`` step's output)."""

    program_id: str
    version: int
    deployed: bool
    deployed_version: int | None
    scores: dict[str, dict[str, float]]
    split: dict[str, int]
    demos: int
    model_calls: int


class DeployRequest(RequestModel):
    version: Annotated[int, Field(ge=1)]
    force: bool = Field(default=False, description="Deploy even if it does not beat the deployed version on test.")


class RollbackRequest(RequestModel):
    version: Annotated[int, Field(ge=1)]
