"""Provider discovery through Python entry points (group ``trellis.providers``).

A package adds a provider by declaring, in its ``pyproject.toml``::

    [project.entry-points."trellis.providers"]
    myprovider = "my_package.module:factory"

where ``factory(context: ProviderContext) -> Provider``. Trellis's own providers are declared the
same way in its ``pyproject.toml``. Providers are instantiated lazily, on first use.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from trellis.gateway.providers.base import Provider, ProviderContext, ProviderFactory

ENTRY_POINT_GROUP = "trellis.providers"


class UnknownProvider(LookupError):
    pass


def discover() -> dict[str, EntryPoint]:
    """Installed providers by name, not yet imported (importing llama.cpp costs time and memory)."""
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


class ProviderRegistry:
    def __init__(self, context: ProviderContext, factories: dict[str, ProviderFactory] | None = None) -> None:
        self._context = context
        self._entries = discover() if factories is None else {}
        self._factories: dict[str, ProviderFactory] = dict(factories or {})
        self._instances: dict[str, Provider] = {}

    @property
    def names(self) -> list[str]:
        return sorted({*self._entries, *self._factories})

    def register(self, name: str, factory: ProviderFactory) -> None:
        """Add or replace a provider at run time (tests, embedding applications)."""
        self._factories[name] = factory
        self._instances.pop(name, None)

    def get(self, name: str) -> Provider:
        instance = self._instances.get(name)
        if instance is None:
            factory = self._factories.get(name)
            if factory is None and name in self._entries:
                factory = self._factories[name] = self._entries[name].load()
            if factory is None:
                raise UnknownProvider(f"no provider named {name!r}; installed: {', '.join(self.names) or 'none'}")
            instance = factory(self._context)
            self._instances[name] = instance
        return instance

    async def aclose(self) -> None:
        for instance in self._instances.values():
            await instance.aclose()
        self._instances.clear()
