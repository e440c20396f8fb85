"""DataLoaders: the reads nested fields make, batched per request so a nested query costs a few
statements per level, not a few per item (``tests/graphql/test_loaders.py`` counts them).

Each loader calls a batched service method, owner-scoped like every other read:

- ``context``: ``ContextService.get_many`` (a relationship's ends, a graph node's, a search hit's);
- ``relationships``: ``ContextService.relationships_of_many``, keyed by context and filters;
- ``steps``: ``WorkflowService.steps_of_runs`` (a run's steps, in its definition's order);
- ``workflow_version``: ``WorkflowService.versions_of`` (the workflow and version a run ran).
"""

from __future__ import annotations

from collections.abc import Sequence

from strawberry.dataloader import DataLoader

from trellis.auth.schemas import Principal
from trellis.context.models import Context
from trellis.context.schemas import Direction, RelationshipOut
from trellis.runtime import Runtime
from trellis.workflows.models import Workflow, WorkflowRun, WorkflowStep, WorkflowVersion

RelationshipKey = tuple[str, str | None, Direction | None]  # (context id, relationship type, direction)


class Loaders:
    def __init__(self, runtime: Runtime, principal: Principal, *, cache: bool = True) -> None:
        self._runtime = runtime
        self._principal = principal
        self.context: DataLoader[str, Context | None] = DataLoader(self._contexts, cache=cache)
        self.relationships: DataLoader[RelationshipKey, list[RelationshipOut]] = DataLoader(
            self._relationships, cache=cache
        )
        self.steps: DataLoader[WorkflowRun, list[WorkflowStep]] = DataLoader(
            self._steps, cache=cache, cache_key_fn=lambda run: run.id
        )
        self.workflow_version: DataLoader[tuple[str, int], tuple[Workflow, WorkflowVersion] | None] = DataLoader(
            self._versions, cache=cache
        )

    async def _contexts(self, ids: list[str]) -> Sequence[Context | None]:
        found = await self._runtime.context.get_many(self._principal, ids)
        return [found.get(i) for i in ids]

    async def _relationships(self, keys: list[RelationshipKey]) -> Sequence[list[RelationshipOut]]:
        # One query per distinct filter (a document usually has one): every context id at once.
        by_filter: dict[tuple[str | None, Direction | None], list[str]] = {}
        for context_id, kind, direction in keys:
            by_filter.setdefault((kind, direction), []).append(context_id)
        answers: dict[RelationshipKey, list[RelationshipOut]] = {}
        for (kind, direction), ids in by_filter.items():
            found = await self._runtime.context.relationships_of_many(
                self._principal, ids, relationship_type=kind, direction=direction
            )
            for context_id, rows in found.items():
                answers[(context_id, kind, direction)] = rows
        return [answers.get(key, []) for key in keys]

    async def _steps(self, runs: list[WorkflowRun]) -> Sequence[list[WorkflowStep]]:
        found = await self._runtime.workflows.steps_of_runs(self._principal, runs)
        return [found.get(run.id, []) for run in runs]

    async def _versions(self, keys: list[tuple[str, int]]) -> Sequence[tuple[Workflow, WorkflowVersion] | None]:
        found = await self._runtime.workflows.versions_of(self._principal, keys)
        return [found.get(key) for key in keys]
