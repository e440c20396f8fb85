"""What a Trellis DSPy module is, and what it gets to work with.

A module is a ``dspy.Module`` subclass built with one argument, ``ModuleDeps`` (the product's
services and the caller's LMs), that declares:

- ``signature``: a ``dspy.Signature`` whose input fields are what ``aforward`` takes and whose
  output fields are what its ``dspy.Prediction`` holds: the doors validate inputs against it (a 400
  naming the field) and list it (``GET /api/v1/dspy/modules``);
- ``description``, and ``writes`` (True when a run changes stored data: it then needs the
  ``write`` scope besides ``ai``).

It implements ``async def aforward(**inputs) -> dspy.Prediction``; ``forward`` (what DSPy's
optimizers call, from a worker thread) runs ``aforward`` on the server's event loop. Modules are
discovered through the ``trellis.dspy_modules`` entry-point group (``trellis.dspy.registry``),
Trellis's own included, so a package that declares one makes it available everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import dspy

from trellis.dspy.engine import CallIdentity, current_identity
from trellis.kit.errors import TrellisError

if TYPE_CHECKING:
    from trellis.context.search.service import ContextSearch
    from trellis.context.service import ContextService
    from trellis.gateway.service import Gateway
    from trellis.settings import DSPySettings

T = TypeVar("T")


class BadModelOutput(TrellisError):
    """The model answered, but not in a shape the module can use (unparsable, empty, too short)."""

    code = "model_output_error"
    status_code = 502
    default_message = "The model's answer could not be used"


class HasForward(Protocol):
    """The seed's protocol: anything with a ``forward`` (every DSPy module has one)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass
class ModuleDeps:
    """The product's services as modules use them, and the LMs they call models through.

    ``lm_for(model)`` gives the LM of a gateway model (None: the module's default); ``loop`` is the
    server's event loop. Copying a module (DSPy's optimizers deep-copy programs) shares these."""

    settings: DSPySettings
    gateway: Gateway
    contexts: ContextService
    search: ContextSearch
    lm_for: Callable[[str | None], dspy.LM]
    loop: asyncio.AbstractEventLoop

    def __deepcopy__(self, memo: dict[int, Any]) -> ModuleDeps:
        return self

    def __copy__(self) -> ModuleDeps:
        return self

    @property
    def caller(self) -> CallIdentity:
        return current_identity()

    def run_sync(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop from another thread and wait for it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            work.close()
            raise RuntimeError("a sync DSPy module call on the event loop's thread would deadlock: use acall()")
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()


class TrellisModule(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
    """Base of the built-in modules (see the module docstring)."""

    signature: ClassVar[type[dspy.Signature]]
    description: ClassVar[str] = ""
    writes: ClassVar[bool] = False

    def __init__(self, deps: ModuleDeps) -> None:
        super().__init__()
        self.deps = deps

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        raise NotImplementedError

    def forward(self, **inputs: Any) -> dspy.Prediction:
        work: Awaitable[dspy.Prediction] = self.aforward(**inputs)
        assert asyncio.iscoroutine(work)
        return self.deps.run_sync(work)


ModuleFactory = Callable[[ModuleDeps], TrellisModule]
