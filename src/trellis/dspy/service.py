"""DSPyService: what every door (REST, CLI, the ``dspy.run`` workflow step) calls to list and run
DSPy modules and module workflows as a caller.

A run checks the caller's scopes (``ai``; ``write`` too for a module that writes), validates the
inputs against the module's signature (a 400 naming the field: missing, unknown or of the wrong
type), builds the module with the product's services, and runs it inside ``dspy.context`` with
the LM of the chosen gateway model and the caller's identity: never ``dspy.configure``, which is
process-wide. Each model call the module makes spends one request of the caller's ``ai`` rate
budget and goes through the gateway (``trellis.dspy.engine``).

Whatever a run raises comes back as the product's error: the gateway's and the store's errors as
they are (a 429, a 503 with an open breaker, a 404), an answer DSPy cannot parse into the
signature's output fields, or one the gateway refused for breaking the JSON structure the adapter
asked for, as a 502 ``model_output_error`` naming the module, anything else as a
500 whose traceback stays in the server's log.

DSPy is imported on first use (it takes seconds), not when the service is built.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import PydanticUndefined

from trellis.auth.schemas import Principal, Scope
from trellis.dspy.schemas import FieldOut, ModuleOut, ModuleRunOut, StageOut, WorkflowOut, WorkflowRunOut
from trellis.gateway.service import InvalidModelOutput
from trellis.kit.errors import (
    FieldError,
    InternalError,
    PermissionDenied,
    RateLimited,
    TrellisError,
    ValidationFailed,
)
from trellis.kit.logging import get_logger
from trellis.ratelimit.base import RateLimiter, take_or_refuse
from trellis.settings import DSPySettings, RouteClass, Settings

if TYPE_CHECKING:
    import dspy

    from trellis.context.search.service import ContextSearch
    from trellis.context.service import ContextService
    from trellis.dspy.engine import CallGuard, CallIdentity
    from trellis.dspy.interface import DSPyModuleFactory, DSPyModuleInterface
    from trellis.dspy.modules.base import ModuleDeps, TrellisModule
    from trellis.dspy.registry import ModuleRegistry
    from trellis.gateway.service import Gateway

log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _fields(fields: dict[str, Any]) -> list[FieldOut]:
    out = []
    for name, info in fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        required = info.default is PydanticUndefined and info.default_factory is None
        default = None if required else info.get_default(call_default_factory=True)
        desc = extra.get("desc")
        out.append(
            FieldOut(
                name=name,
                type=type_name(info.annotation),
                description=desc if isinstance(desc, str) and not desc.startswith("${") else None,
                required=required,
                default=default,
            )
        )
    return out


def _inputs_model(name: str, signature: Any) -> type[BaseModel]:
    """A strict pydantic model of the signature's input fields (unknown fields refused)."""
    definitions: dict[str, Any] = {}
    for field_name, info in signature.input_fields.items():
        required = info.default is PydanticUndefined and info.default_factory is None
        definitions[field_name] = (info.annotation, ... if required else info.get_default(call_default_factory=True))
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(f"{name}_inputs", __config__=config, **definitions)


class DSPyService:
    def __init__(
        self,
        settings: Settings,
        gateway: Gateway,
        contexts: ContextService,
        search: ContextSearch,
        limiter: RateLimiter,
        *,
        registry: ModuleRegistry | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._settings = settings
        self._tuning = settings.dspy
        self._gateway = gateway
        self._contexts = contexts
        self._search = search
        self._limiter = limiter
        self._registry = registry
        self._sleep = sleep or asyncio.sleep
        self._deps: ModuleDeps | None = None
        self._lms: dict[str, dspy.LM] = {}
        self._inputs: dict[str, type[BaseModel]] = {}

    # --- the pieces, made on first use ------------------------------------------------------------

    @property
    def registry(self) -> ModuleRegistry:
        if self._registry is None:
            from trellis.dspy.registry import ModuleRegistry

            self._registry = ModuleRegistry()
        return self._registry

    @property
    def settings(self) -> DSPySettings:
        return self._tuning

    @property
    def gateway(self) -> Gateway:
        return self._gateway

    def deps(self) -> ModuleDeps:
        """The services modules use, bound to the running event loop (call from the loop)."""
        loop = asyncio.get_running_loop()
        if self._deps is None or self._deps.loop is not loop:
            from trellis.dspy.modules.base import ModuleDeps

            self._lms.clear()  # their sync engines call the loop they were made on
            self._deps = ModuleDeps(self._tuning, self._gateway, self._contexts, self._search, self.lm_for, loop)
        return self._deps

    def lm_for(self, model: str | None) -> dspy.LM:
        """The LM of a gateway model (an alias gives its model's LM); None: ``[dspy] default_model``."""
        from trellis.dspy.engine import gateway_lm

        name, _ = self._gateway.resolve(model or self._tuning.default_model, "chat")
        lm = self._lms.get(name)
        if lm is None:
            deps = self._deps
            loop = deps.loop if deps is not None else asyncio.get_running_loop()
            lm = self._lms[name] = gateway_lm(
                self._gateway,
                name,
                self.admit,
                loop,
                temperature=self._tuning.temperature,
                max_tokens=self._tuning.max_tokens,
            )
        return lm

    async def admit(self, identity: CallIdentity) -> None:
        """One request of the caller's ``ai`` budget per model call. A patient caller (an
        optimization run) waits for the budget, up to ``[dspy] rate_limit_wait_seconds`` a call."""
        if not self._settings.rate_limit_enabled:
            return
        principal = identity.principal
        rule = self._settings.rate_limits[principal.role][RouteClass.AI]
        key = f"{RouteClass.AI.value}:{principal.rate_limit_subject}"
        waited = 0.0
        while True:
            try:
                await take_or_refuse(self._limiter, key, rule, RouteClass.AI.value)
                return
            except RateLimited as exc:
                wait = float(exc.details.get("retry_after_seconds") or 1.0)
                if not identity.patient or waited + wait > self._tuning.rate_limit_wait_seconds:
                    raise
                waited += wait
                await self._sleep(wait)

    # --- what is registered ----------------------------------------------------------------------

    def describe(self, name: str) -> ModuleOut:
        module = self.registry.module(name)
        signature = module.signature
        return ModuleOut(
            name=name,
            module_type=module.__name__,
            description=module.description,
            writes=module.writes,
            instructions=str(signature.instructions),
            inputs=_fields(signature.input_fields),
            outputs=_fields(signature.output_fields),
        )

    def list_modules(self) -> list[ModuleOut]:
        return [self.describe(name) for name in self.registry.module_names]

    def list_workflows(self) -> list[WorkflowOut]:
        out = []
        for name in self.registry.workflow_names:
            spec = self.registry.workflow(name)
            out.append(
                WorkflowOut(
                    name=name,
                    description=spec.description,
                    runnable=spec.runnable,
                    stages=[StageOut(name=s.name, module=s.module) for s in spec.stages],
                )
            )
        return out

    # --- running -----------------------------------------------------------------------------------

    def validate_inputs(self, name: str, inputs: Any, *, prefix: str = "inputs") -> dict[str, Any]:
        """The inputs as the module's signature types them, or a 400 naming each bad field."""
        module = self.registry.module(name)
        if not isinstance(inputs, dict):
            raise ValidationFailed.of(prefix, "must be an object of the module's input fields", type="dict_type")
        model = self._inputs.get(name)
        if model is None:
            model = self._inputs[name] = _inputs_model(name, module.signature)
        try:
            parsed = model.model_validate(inputs)
        except ValidationError as exc:
            fields: list[FieldError] = []
            for error in exc.errors(include_url=False):
                where = ".".join(str(part) for part in error["loc"])
                fields.append(
                    FieldError(
                        field=f"{prefix}.{where}" if where else prefix,
                        message=error["msg"],
                        location="body",
                        type=error["type"],
                    )
                )
            raise ValidationFailed.of_fields(fields, module=name) from None
        return {key: getattr(parsed, key) for key in type(parsed).model_fields}

    def check_scopes(self, principal: Principal, module: type[TrellisModule]) -> None:
        if Scope.AI not in principal.scopes:
            raise PermissionDenied("This credential lacks the 'ai' scope", details={"scope": Scope.AI.value})
        if module.writes and Scope.WRITE not in principal.scopes:
            raise PermissionDenied(
                "This module writes to your contexts: the credential needs the 'write' scope",
                details={"scope": Scope.WRITE.value},
            )

    def interface(
        self,
        principal: Principal,
        name: str,
        *,
        model: str | None = None,
        request_id: str | None = None,
        patient: bool = False,
        guard: CallGuard | None = None,
    ) -> DSPyModuleInterface:
        """A module ready to run as ``principal`` (the seed's ``DSPyModuleInterface``). ``patient``
        and ``guard``: an optimization run's (waits for the rate budget; its call budget)."""
        from trellis.dspy.engine import CallIdentity
        from trellis.dspy.interface import DSPyModuleInterface

        module_class = self.registry.module(name)
        self.check_scopes(principal, module_class)
        deps = self.deps()
        lm = self.lm_for(model)
        identity = CallIdentity(principal, name, request_id, patient, guard)
        return DSPyModuleInterface(
            module_class(deps),
            name=name,
            identity=identity,
            lm=lm,
            translate=self.translate,
            adapter=self._tuning.adapter,
        )

    def factory(
        self, principal: Principal, *, model: str | None = None, request_id: str | None = None
    ) -> DSPyModuleFactory:
        """The seed's ``DSPyModuleFactory``, for this caller."""
        from trellis.dspy.interface import DSPyModuleFactory

        return DSPyModuleFactory(
            self.registry, lambda name: self.interface(principal, name, model=model, request_id=request_id)
        )

    async def run_module(
        self,
        principal: Principal,
        name: str,
        inputs: Any,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> ModuleRunOut:
        """Run a module; its failures raise (the doors answer them as errors)."""
        interface = self.interface(principal, name, model=model, request_id=request_id)
        values = self.validate_inputs(name, inputs)
        data, seconds = await interface.run(values)
        return ModuleRunOut(
            success=True,
            data=data,
            module=name,
            module_type=interface.module_type,
            execution_time=seconds,
            model=interface.model,
        )

    async def run_workflow(
        self,
        principal: Principal,
        name: str,
        inputs: Any,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> WorkflowRunOut:
        """Run a workflow's stages as a chain; a stage's failure raises, naming the stage."""
        spec = self.registry.workflow(name)
        if not spec.runnable:
            raise ValidationFailed.of(
                "workflow", f"{name!r} is a set of modules to call one by one, not a chain", type="not_runnable"
            )
        if not isinstance(inputs, dict):
            raise ValidationFailed.of("inputs", "must be an object", type="dict_type")
        started = time.perf_counter()
        done: dict[str, dict[str, Any]] = {}
        stages: dict[str, ModuleRunOut] = {}
        for stage in spec.stages:
            assert stage.bind is not None
            try:
                bound = stage.bind(inputs, done)
            except KeyError as exc:
                raise ValidationFailed.of(f"inputs.{exc.args[0]}", "Field required", type="missing") from None
            try:
                result = await self.run_module(principal, stage.module, bound, model=model, request_id=request_id)
            except TrellisError as exc:
                exc.details = {**exc.details, "stage": stage.name}
                raise
            assert result.data is not None
            done[stage.name] = result.data
            stages[stage.name] = result
        last = spec.stages[-1].name
        return WorkflowRunOut(
            workflow=name, success=True, stages=stages, data=done[last], execution_time=time.perf_counter() - started
        )

    # --- errors --------------------------------------------------------------------------------------

    @staticmethod
    def translate(exc: BaseException, module: str) -> TrellisError:
        """What a module run raised, as the product's error (see the module docstring)."""
        from trellis.dspy.modules.base import BadModelOutput

        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, InvalidModelOutput):
                # The gateway refused an answer that broke the JSON structure DSPy's adapter asked
                # for: to the module's caller that is the model's output failing the module.
                return BadModelOutput(
                    f"The model's answer to module {module!r} did not have the structure of its output fields",
                    details={**seen.details, "module": module},
                )
            if isinstance(seen, TrellisError):
                return seen
            seen = seen.__cause__ or seen.__context__
        from dspy.utils.exceptions import AdapterParseError

        if isinstance(exc, AdapterParseError):
            response = str(getattr(exc, "lm_response", "") or "")
            return BadModelOutput(
                f"The model's answer to module {module!r} could not be parsed into its output fields",
                details={
                    "module": module,
                    "adapter": getattr(exc, "adapter_name", None),
                    "response": response[:500],
                },
            )
        log.error("dspy_module_failed", module=module, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return InternalError(f"Module {module!r} failed ({type(exc).__name__})", details={"module": module})
