"""``transform``: shape data with a template. ``with: {value: …}``: every template inside ``value``
is evaluated (Jinja2's sandbox, see ``trellis.workflows.templates``) and the result is the output.

    - id: greet
      type: transform
      with:
        value: {greeting: "Hello, {{ input.name }}!", length: "{{ input.name | length }}"}
"""

from __future__ import annotations

from typing import Any, ClassVar

from trellis.workflows.steps.base import StepConfig, StepContext


class TransformConfig(StepConfig):
    value: Any


class TransformStep:
    name: ClassVar[str] = "transform"
    Config: ClassVar[type[StepConfig]] = TransformConfig
    side_effects: ClassVar[bool] = False
    inline: ClassVar[bool] = True  # pure and instant: chained transforms share one commit
    description: ClassVar[str] = "Evaluate templates in `value`; the result is the output."

    async def run(self, ctx: StepContext, config: TransformConfig) -> Any:
        return config.value
