"""DSPy module and module-workflow discovery through Python entry points.

A package adds a module by declaring, in its ``pyproject.toml``::

    [project.entry-points."trellis.dspy_modules"]
    "mycompany.triage" = "my_package.modules:TriageModule"

where the object is a ``TrellisModule`` subclass (``trellis.dspy.modules.base``): built with a
``ModuleDeps``, with a ``signature``, a ``description`` and an ``aforward``. A module workflow
(the seed's ``task_execution``, ``documentation_retrieval``) is a ``WorkflowSpec`` declared in the
``trellis.dspy_workflows`` group: named stages, each a registered module. Trellis's own modules and
workflows are declared the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from trellis.kit.errors import NotFound

if TYPE_CHECKING:  # importing DSPy takes seconds: only what runs a module loads it
    from trellis.dspy.modules.base import TrellisModule

MODULE_GROUP = "trellis.dspy_modules"
WORKFLOW_GROUP = "trellis.dspy_workflows"


# A stage's inputs from the workflow's input and the earlier stages' outputs (by stage name).
Bind = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    # None: the stage is not run by ``run_workflow`` (the workflow is a set of modules to call).
    bind: Bind | None = None


@dataclass(frozen=True)
class WorkflowSpec:
    """Named stages in order, each a registered module. When every stage has ``bind``, the
    workflow runs as a chain: each stage's inputs are computed from what came before."""

    description: str
    stages: tuple[Stage, ...]

    @property
    def runnable(self) -> bool:
        return all(stage.bind is not None for stage in self.stages)


class _Entries:
    def __init__(self, group: str, extra: dict[str, Any] | None, discover: bool) -> None:
        self._entries: dict[str, EntryPoint] = (
            {entry.name: entry for entry in entry_points(group=group)} if discover else {}
        )
        self._loaded: dict[str, Any] = dict(extra or {})

    @property
    def names(self) -> list[str]:
        return sorted({*self._entries, *self._loaded})

    def register(self, name: str, value: Any) -> None:
        self._loaded[name] = value

    def knows(self, name: str) -> bool:
        return name in self._loaded or name in self._entries

    def load(self, name: str) -> Any | None:
        if name not in self._loaded and name in self._entries:
            self._loaded[name] = self._entries[name].load()
        return self._loaded.get(name)


class ModuleRegistry:
    def __init__(
        self,
        modules: dict[str, type[TrellisModule]] | None = None,
        workflows: dict[str, WorkflowSpec] | None = None,
        *,
        discover: bool = True,
    ) -> None:
        self._modules = _Entries(MODULE_GROUP, modules, discover)
        self._workflows = _Entries(WORKFLOW_GROUP, workflows, discover)

    @property
    def module_names(self) -> list[str]:
        return self._modules.names

    @property
    def workflow_names(self) -> list[str]:
        return self._workflows.names

    def register_module(self, name: str, module: type[TrellisModule]) -> None:
        """Add or replace a module at run time (tests, embedding applications)."""
        self._modules.register(name, module)

    def register_workflow(self, name: str, spec: WorkflowSpec) -> None:
        self._workflows.register(name, spec)

    def module(self, name: str) -> type[TrellisModule]:
        from trellis.dspy.modules.base import TrellisModule

        found = self._modules.load(name) if len(name) <= 200 else None
        if found is None:
            raise NotFound(
                f"No DSPy module named {name!r}", details={"module": name[:200], "available": self.module_names}
            )
        if not (isinstance(found, type) and issubclass(found, TrellisModule)):
            raise TypeError(f"entry point {name!r} of {MODULE_GROUP} is not a TrellisModule subclass")
        return found

    def workflow(self, name: str) -> WorkflowSpec:
        found = self._workflows.load(name) if len(name) <= 200 else None
        if found is None:
            raise NotFound(
                f"No DSPy module workflow named {name!r}",
                details={"workflow": name[:200], "available": self.workflow_names},
            )
        if not isinstance(found, WorkflowSpec):
            raise TypeError(f"entry point {name!r} of {WORKFLOW_GROUP} is not a WorkflowSpec")
        return found
