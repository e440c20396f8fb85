"""Request and response shapes of the DSPy doors: modules, module workflows, runs."""

from __future__ import annotations

from typing import Annotated, Any

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
