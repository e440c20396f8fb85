"""The seed's module interface and factory: ``DSPyModuleInterface`` and ``DSPyModuleFactory``.

``DSPyModuleInterface(module).execute(inputs)`` runs any module (``HasForward``) as its caller and
answers the seed's standard shape, ``{success, data | error, module_type, execution_time}``, with
the time measured around the call (the seed's version measured nothing). ``DSPyModuleFactory``
makes interfaces by module type and sets of them by workflow type, from the registry (entry
points), not an if/elif chain. Get a factory from ``DSPyService.factory(principal)``: the caller's
identity and LM go with it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import dspy
from pydantic_core import to_jsonable_python

from trellis.dspy.engine import IDENTITY_KEY, CallIdentity
from trellis.dspy.modules.base import HasForward
from trellis.dspy.schemas import ModuleError, ModuleRunOut
from trellis.kit.errors import TrellisError

if TYPE_CHECKING:
    from trellis.dspy.registry import ModuleRegistry

__all__ = ["DSPyModuleFactory", "DSPyModuleInterface", "HasForward", "call_scope", "outputs_of"]


class SchemaCachingJSONAdapter(dspy.JSONAdapter):  # type: ignore[misc]
    """DSPy's JSONAdapter, with each signature's structured-output format built once.

    ``JSONAdapter`` builds a pydantic model and its JSON schema from the signature's output fields
    on every call (about 5 ms on these cores, most of what DSPy adds to a model call:
    bench/dspy_overhead.py). Signatures are classes that do not change once made, so the format is
    kept per signature class (weakly: a signature made on the fly goes away with its module)."""

    _formats: ClassVar[weakref.WeakKeyDictionary[Any, dict[tuple[int, bool], Any]]] = weakref.WeakKeyDictionary()

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        # What the choice depends on besides the signature: the LM's declared support (Trellis keeps
        # one LM per model for the process) and whether the caller chose a format already.
        key = (id(lm), "response_format" in lm_kwargs)
        cached = self._formats.get(signature)
        if cached is not None and key in cached:
            if cached[key] is not None:
                lm_kwargs["response_format"] = cached[key]
            return
        super()._prepare_response_format(lm, lm_kwargs, signature)
        self._formats.setdefault(signature, {})[key] = lm_kwargs.get("response_format")


ADAPTERS: dict[str, Callable[[], Any]] = {
    "json": lambda: SchemaCachingJSONAdapter(),
    "chat": lambda: dspy.ChatAdapter(),
}


def call_scope(identity: CallIdentity, lm: dspy.LM, adapter: str = "json") -> Any:
    """DSPy's per-call context: the LM, the adapter, the caller, no process-wide history of prompts."""
    return dspy.context(lm=lm, adapter=ADAPTERS[adapter](), disable_history=True, **{IDENTITY_KEY: identity})


def outputs_of(prediction: Any) -> dict[str, Any]:
    values = prediction.toDict() if hasattr(prediction, "toDict") else dict(prediction)
    jsonable: dict[str, Any] = to_jsonable_python(values, fallback=str)
    return jsonable


class DSPyModuleInterface:
    """One module, ready to run as one caller. ``translate`` turns whatever a run raised into the
    product's error (``DSPyService.translate``)."""

    def __init__(
        self,
        module: HasForward,
        *,
        name: str,
        identity: CallIdentity,
        lm: dspy.LM,
        translate: Callable[[BaseException, str], TrellisError],
        adapter: str = "json",
    ) -> None:
        self.module = module
        self.name = name
        self.module_type = module.__class__.__name__
        self._identity = identity
        self._lm = lm
        self._translate = translate
        self._adapter = adapter

    @property
    def identity(self) -> CallIdentity:
        return self._identity

    @property
    def lm(self) -> dspy.LM:
        return self._lm

    @property
    def adapter(self) -> str:
        return self._adapter

    @property
    def model(self) -> str:
        return str(self._lm.model).removeprefix("trellis/")

    def error_of(self, exc: BaseException) -> TrellisError:
        """What a run (or an optimizer working on this module) raised, as the product's error."""
        return self._translate(exc, self.name)

    async def run(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """(outputs, seconds); raises the product's errors."""
        started = time.perf_counter()
        try:
            with call_scope(self._identity, self._lm, self._adapter):
                acall = getattr(self.module, "acall", None)
                prediction = await acall(**inputs) if acall is not None else self.module.forward(**inputs)
        except Exception as exc:  # noqa: BLE001 - every failure of a run becomes the product's error, here
            raise self._translate(exc, self.name) from None
        return outputs_of(prediction), time.perf_counter() - started

    async def execute(self, input_data: dict[str, Any]) -> dict[str, Any]:
        """The seed's ``execute``: the standard result shape, never an exception for a failed run."""
        return (await self.execute_out(input_data)).model_dump()

    async def execute_out(self, input_data: dict[str, Any]) -> ModuleRunOut:
        started = time.perf_counter()
        try:
            data, seconds = await self.run(input_data)
        except TrellisError as exc:
            return ModuleRunOut(
                success=False,
                error=ModuleError(code=exc.code, message=exc.message, details=exc.details),
                module=self.name,
                module_type=self.module_type,
                execution_time=time.perf_counter() - started,
                model=self.model,
            )
        return ModuleRunOut(
            success=True,
            data=data,
            module=self.name,
            module_type=self.module_type,
            execution_time=seconds,
            model=self.model,
        )


class DSPyModuleFactory:
    """Module interfaces by type and workflows by type, from the registry."""

    def __init__(self, registry: ModuleRegistry, build: Callable[[str], DSPyModuleInterface]) -> None:
        self._registry = registry
        self._build = build

    def create_module(self, module_type: str) -> DSPyModuleInterface:
        return self._build(module_type)

    def create_workflow(self, workflow_type: str) -> dict[str, DSPyModuleInterface]:
        spec = self._registry.workflow(workflow_type)
        return {stage.name: self._build(stage.module) for stage in spec.stages}
