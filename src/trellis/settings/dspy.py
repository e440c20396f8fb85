"""``[dspy]``: DSPy modules and programs: their model calls, optimization budgets, program files."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class DSPySettings(BaseModel):
    """DSPy modules, programs and the optimization loop (``[dspy]`` in trellis.toml, ``TRELLIS_DSPY__*``)."""

    model_config = ConfigDict(extra="forbid")

    # The model a module's predictors use when a run names none (None: the gateway's default chat model).
    default_model: str | None = None
    # Sampling for module calls: 0 makes a module's answer repeatable (and lets the gateway cache it).
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_tokens: Annotated[int, Field(gt=0)] = 256
    # How predictors format prompts and read answers: "json" (DSPy's JSONAdapter: the answer is
    # constrained to the signature's JSON schema where the model can be, one call) or "chat"
    # (ChatAdapter's [[ ## field ## ]] sections, retried as JSON when the answer does not parse).
    # Small local models rarely follow the chat format: json is the default.
    adapter: Literal["json", "chat"] = "json"
    # The most few-shot demos an optimized program may carry.
    max_demos: Annotated[int, Field(ge=0, le=32)] = 8
    # When the caller's `ai` budget is empty in the middle of an optimization run, wait for it up to this
    # long per model call (a module run from a request gets the 429 at once).
    rate_limit_wait_seconds: Annotated[float, Field(ge=0, le=600)] = 60.0
    # Programs and datasets (``/api/v1/dspy/programs``, ``/datasets``). The most examples one
    # dataset may hold, and the most an optimization run may use / the most model calls it may make:
    # a request asking for more is a 400 naming the field; a run stops at its budget.
    dataset_max_examples: Annotated[int, Field(gt=0, le=100_000)] = 5000
    optimize_max_examples: Annotated[int, Field(gt=0, le=100_000)] = 1000
    optimize_max_model_calls: Annotated[int, Field(gt=0, le=1_000_000)] = 2000
    # The longest answer of an optimizer's own calls (MIPROv2's instruction proposals, GEPA's
    # reflections: instructions, longer than a module's answers), capped at the model's max_output_tokens.
    optimizer_max_tokens: Annotated[int, Field(gt=0)] = 512
    # How long one optimization run's step may take before the workflow engine cancels it.
    optimize_timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 3600.0
