"""``context.search`` and ``context.add``: the run owner's context store, through the same services
as the REST door. ``context.search`` takes ``query``, ``mode`` (hybrid, keyword, semantic),
``limit`` and ``types`` and outputs ``{hits: [{id, type, content, metadata, score}], model}``;
``context.add`` takes ``type``, ``content`` and ``metadata`` and outputs the new context's id.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationError

from trellis.context.schemas import ContextCreate
from trellis.context.search.schemas import SearchQuery
from trellis.kit.errors import TrellisError
from trellis.workflows.steps.base import StepConfig, StepContext, StepFailed, failed_from


class SearchConfig(StepConfig):
    query: Annotated[str, Field(min_length=1)]
    mode: str | None = None
    limit: Annotated[int, Field(ge=1, le=100)] | None = None
    types: list[str] = Field(default_factory=list)


class AddConfig(StepConfig):
    type: Annotated[str, Field(min_length=1)]
    content: Annotated[str, Field(min_length=1)]
    metadata: dict[str, Any] | None = None


class ContextSearchStep:
    name: ClassVar[str] = "context.search"
    Config: ClassVar[type[StepConfig]] = SearchConfig
    side_effects: ClassVar[bool] = False
    description: ClassVar[str] = "Search the run owner's context store (hybrid, keyword or semantic)."

    async def run(self, ctx: StepContext, config: SearchConfig) -> Any:
        try:
            query = SearchQuery.parse(config.query, mode=config.mode, types=config.types, limit=config.limit)
            result = await ctx.services.search.search(
                ctx.owner, query, door="workflow", request_id=f"{ctx.run_id}:{ctx.step_id}"
            )
        except TrellisError as exc:
            raise failed_from(exc) from None
        hits = [
            {
                "id": hit.context.id,
                "type": hit.context.type,
                "content": hit.context.content,
                "metadata": hit.context.meta,
                "score": hit.score,
            }
            for hit in result.hits
        ]
        return {"hits": hits, "model": result.model, "degraded": list(result.degraded)}


class ContextAddStep:
    name: ClassVar[str] = "context.add"
    Config: ClassVar[type[StepConfig]] = AddConfig
    side_effects: ClassVar[bool] = True
    description: ClassVar[str] = "Add a context to the run owner's store."

    async def run(self, ctx: StepContext, config: AddConfig) -> Any:
        try:
            data = ContextCreate.model_validate(config.model_dump(exclude_none=True))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise StepFailed(f"with.{'.'.join(map(str, first['loc']))}: {first['msg']}", retryable=False) from None
        try:
            row, _ = await ctx.services.contexts.create(ctx.owner, data)
        except TrellisError as exc:
            raise failed_from(exc) from None
        return {"id": row.id, "type": row.type, "version": row.version}
