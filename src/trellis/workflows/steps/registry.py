"""Step-type discovery through Python entry points (group ``trellis.steps``).

A package adds a step type by declaring, in its ``pyproject.toml``::

    [project.entry-points."trellis.steps"]
    "mycompany.notify" = "my_package.steps:NotifyStep"

where the object is a class (or factory) with no arguments returning a ``StepType``. Trellis's own
step types are declared the same way. ``map`` is not a plugin: it is part of the workflow language
(the engine fans its inner step out).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from trellis.workflows.steps.base import StepFactory, StepType

ENTRY_POINT_GROUP = "trellis.steps"
MAP_STEP = "map"


class UnknownStepType(LookupError):
    pass


class StepRegistry:
    def __init__(self, factories: dict[str, StepFactory] | None = None, *, discover: bool = True) -> None:
        self._entries: dict[str, EntryPoint] = (
            {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)} if discover else {}
        )
        self._factories: dict[str, StepFactory] = dict(factories or {})
        self._instances: dict[str, StepType] = {}

    @property
    def names(self) -> list[str]:
        return sorted({*self._entries, *self._factories, MAP_STEP})

    def register(self, name: str, factory: StepFactory) -> None:
        """Add or replace a step type at run time (tests, embedding applications)."""
        self._factories[name] = factory
        self._instances.pop(name, None)

    def knows(self, name: str) -> bool:
        return name == MAP_STEP or name in self._factories or name in self._entries

    def get(self, name: str) -> StepType:
        instance = self._instances.get(name)
        if instance is None:
            factory = self._factories.get(name)
            if factory is None and name in self._entries:
                factory = self._factories[name] = self._entries[name].load()
            if factory is None:
                raise UnknownStepType(f"no step type named {name!r}; known: {', '.join(self.names)}")
            instance = self._instances[name] = factory()
        return instance
