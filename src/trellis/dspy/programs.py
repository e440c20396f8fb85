"""ProgramService: DSPy datasets, programs and their versions, what every door (REST, CLI, the
``dspy.optimize`` workflow step) calls.

* **Datasets**: a user's labelled examples for one module, each validated against the module's
  signature when uploaded (input fields as a run takes them; output fields, the labels, of their
  declared types, at least one per example). A bad example is a 400 naming it: ``examples.<i>.<field>``
  for a JSON list, ``line <n>.<field>`` for JSON Lines. A dataset a version was compiled from is
  kept (409 on delete): the version must stay reproducible.
* **Programs**: a named use of a module. Each optimization cycle that finishes adds a version:
  the compiled state with the dataset, split, optimizer, parameters, model and scores, signed (see
  ``optimize.py``). ``deployed_version`` is what ``run`` uses.
* **Optimization** is a durable workflow run: ``start_optimization`` checks the request (the
  optimizer and the parameters it reads, the budget limits and the calls the optimizer is
  estimated to make: 400s naming the field) and queues a run of the internal one-step workflow
  ``dspy.optimize``; the step calls ``optimize``, which runs the cycle, reports progress as run
  events, and stores the version — and, when asked, deploys it if it beats the deployed version
  on the held-out test split — in one transaction. A cycle that fails (an open breaker, the budget
  spent) stores nothing and deploys nothing.
* **Deploy** promotes a version only if its test score beats the deployed version's (with none
  deployed: the unoptimized module's, measured in the same cycle), unless ``force``. **Rollback**
  moves the pointer back to an earlier version. Both, and ``run``, refuse a version whose document
  does not match its tag.

The signing key is derived from the server's JWT secret: rotating that secret makes every stored
version refuse to load (re-run the optimization).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import PydanticUndefined, to_jsonable_python
from sqlalchemy.exc import IntegrityError

from trellis.auth.schemas import Principal, Scope
from trellis.dspy import repository as repo
from trellis.dspy.models import DSPyDataset, DSPyProgram, DSPyProgramVersion
from trellis.dspy.schemas import (
    DatasetCreate,
    DatasetOut,
    DeployRequest,
    ModuleRunOut,
    OptimizeOut,
    OptimizeRequest,
    OptimizeStarted,
    ProgramCreate,
    ProgramOut,
    RollbackRequest,
    VersionOut,
)
from trellis.kit.errors import Conflict, FieldError, NotFound, PermissionDenied, ValidationFailed
from trellis.kit.ids import new_id
from trellis.settings import DSPySettings

if TYPE_CHECKING:
    import dspy

    from trellis.dspy.interface import DSPyModuleInterface
    from trellis.dspy.service import DSPyService
    from trellis.kit.clock import Clock
    from trellis.storage.database import Database

FORMAT = 1
OPTIMIZE_WORKFLOW = "dspy.optimize"
OPTIMIZE_STEP = "dspy.optimize"
MAX_REPORTED_ERRORS = 20

# Queues a run of the internal workflow as the caller: (principal, workflow definition, input) -> run id.
StartRun = Callable[[Principal, dict[str, Any], dict[str, Any]], Awaitable[str]]
Report = Callable[[str, Mapping[str, Any]], Awaitable[None]]


def program_key(secret: str) -> bytes:
    """The versions' signing key, derived from the server's JWT secret (one secret to keep)."""
    return hmac.new(secret.encode(), b"trellis.dspy.programs.v1", hashlib.sha256).digest()


def optimize_definition(timeout_seconds: float) -> dict[str, Any]:
    """The internal workflow an optimization runs as: one ``dspy.optimize`` step, no retry (a
    cycle that failed is started again by its caller, not replayed)."""
    return {
        "description": "An optimization cycle of a DSPy program (made by POST /api/v1/dspy/programs/{id}/optimize).",
        "steps": [
            {
                "id": "optimize",
                "type": OPTIMIZE_STEP,
                "with": {"program_id": "{{ input.program_id }}", "request": "{{ input.request }}"},
                "timeout_seconds": timeout_seconds,
                "retry": {"attempts": 1},
            }
        ],
        "output": "{{ steps.optimize.output }}",
    }


def _examples_model(name: str, signature: Any) -> type[BaseModel]:
    """A strict model of one example: the input fields as a run takes them, the output fields
    (labels) optional but typed; unknown fields refused."""
    definitions: dict[str, Any] = {}
    for field_name, info in signature.input_fields.items():
        required = info.default is PydanticUndefined and info.default_factory is None
        definitions[field_name] = (info.annotation, ... if required else info.get_default(call_default_factory=True))
    for field_name, info in signature.output_fields.items():
        definitions[field_name] = (info.annotation | None, None)
    return create_model(f"{name}_example", __config__=ConfigDict(extra="forbid", strict=True), **definitions)


@dataclass(frozen=True)
class _Request:
    """An optimization request as checked: what the run uses."""

    program: DSPyProgram
    dataset: DSPyDataset
    size: int
    params: dict[str, Any]
    estimate: int
    budget: int


def _not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"No DSPy {kind} {ident!r}", details={kind: ident[:100]})


@dataclass
class _Verified:
    row: DSPyProgramVersion
    document: dict[str, Any] | None  # None: the row does not match its tag


class ProgramService:
    def __init__(self, database: Database, clock: Clock, dspy: DSPyService, key: bytes, settings: DSPySettings) -> None:
        if len(key) < 32:
            raise ValueError("the signing key needs at least 32 bytes")
        self._database = database
        self._clock = clock
        self._dspy = dspy
        self._key = key
        self._settings = settings
        self._start_run: StartRun | None = None

    def bind_runs(self, start_run: StartRun) -> None:
        """How optimization runs are queued (the workflow service, built after this one: its step
        services need this service)."""
        self._start_run = start_run

    # --- datasets ------------------------------------------------------------------------------------

    def _rows(self, data: DatasetCreate) -> list[tuple[str, Any]]:
        """(where, example) pairs: ``examples.<i>`` or ``line <n>``."""
        if (data.examples is None) == (data.jsonl is None):
            raise ValidationFailed.of("examples", "give exactly one of examples and jsonl", type="one_of")
        if data.examples is not None:
            return [(f"examples.{index}", row) for index, row in enumerate(data.examples)]
        assert data.jsonl is not None
        rows: list[tuple[str, Any]] = []
        for number, line in enumerate(data.jsonl.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {number}", json.loads(line)))
            except ValueError as exc:
                raise ValidationFailed.of(f"line {number}", f"not JSON: {exc}", type="json_invalid") from None
        return rows

    def validate_examples(self, module: str, rows: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
        """The examples as the signature types them, or a 400 naming each bad one and its field."""
        module_class = self._dspy.registry.module(module)
        signature = module_class.signature
        model = _examples_model(module, signature)
        outputs = list(signature.output_fields)
        problems: list[FieldError] = []
        valid: list[dict[str, Any]] = []
        for where, row in rows:
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
            if not isinstance(row, dict):
                problems.append(
                    FieldError(
                        field=where, message="must be an object of signature fields", location="body", type="dict_type"
                    )
                )
                continue
            try:
                parsed = model.model_validate(row)
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    at = ".".join(str(part) for part in error["loc"])
                    problems.append(
                        FieldError(
                            field=f"{where}.{at}" if at else where,
                            message=error["msg"],
                            location="body",
                            type=error["type"],
                        )
                    )
                continue
            values = {k: v for k, v in parsed.model_dump().items() if k in row or k not in outputs}
            if not any(row.get(k) is not None for k in outputs):
                problems.append(
                    FieldError(
                        field=where,
                        message=f"has no label: give at least one output field ({', '.join(outputs)})",
                        location="body",
                        type="missing_label",
                    )
                )
                continue
            valid.append(to_jsonable_python(values))
        if problems:
            raise ValidationFailed.of_fields(problems[:MAX_REPORTED_ERRORS], module=module)
        return valid

    async def create_dataset(self, principal: Principal, data: DatasetCreate) -> DatasetOut:
        rows = self._rows(data)
        if not rows:
            raise ValidationFailed.of("examples", "at least one example", type="too_short")
        if len(rows) > self._settings.dataset_max_examples:
            raise ValidationFailed.of(
                "examples",
                f"at most {self._settings.dataset_max_examples} examples ([dspy] dataset_max_examples)",
                type="too_long",
            )
        examples = self.validate_examples(data.module, rows)
        row = DSPyDataset(
            id=new_id("ds"),
            owner_id=principal.user_id,
            name=data.name,
            module=data.module,
            examples=examples,
            size=len(examples),
            created_at=self._clock.now(),
        )
        try:
            async with self._database.transaction() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(f"You have a dataset named {data.name!r}", details={"name": data.name}) from None
        return self._dataset_out(row)

    @staticmethod
    def _dataset_out(row: DSPyDataset, *, examples: bool = False) -> DatasetOut:
        return DatasetOut(
            id=row.id,
            name=row.name,
            module=row.module,
            size=row.size,
            created_at=row.created_at,
            examples=list(row.examples) if examples else None,
        )

    async def list_datasets(self, principal: Principal) -> list[DatasetOut]:
        async with self._database.reader() as session:
            return [self._dataset_out(row) for row in await repo.datasets(session, principal.user_id)]

    async def _dataset(self, principal: Principal, dataset_id: str) -> DSPyDataset:
        async with self._database.reader() as session:
            row = await repo.owned_dataset(session, principal.user_id, dataset_id)
        if row is None:
            raise _not_found("dataset", dataset_id)
        return row

    async def get_dataset(self, principal: Principal, dataset_id: str) -> DatasetOut:
        return self._dataset_out(await self._dataset(principal, dataset_id), examples=True)

    async def delete_dataset(self, principal: Principal, dataset_id: str) -> None:
        async with self._database.transaction() as session:
            row = await repo.owned_dataset(session, principal.user_id, dataset_id)
            if row is None:
                raise _not_found("dataset", dataset_id)
            used = await repo.versions_using(session, dataset_id)
            if used:
                raise Conflict(
                    "Program versions were compiled from this dataset: it is kept so they stay reproducible",
                    details={"dataset": dataset_id, "versions": used},
                )
            await repo.delete_dataset(session, dataset_id)

    # --- programs ------------------------------------------------------------------------------------

    async def create_program(self, principal: Principal, data: ProgramCreate) -> ProgramOut:
        self._dspy.registry.module(data.module)  # 404 for an unknown module
        now = self._clock.now()
        row = DSPyProgram(
            id=new_id("prg"),
            owner_id=principal.user_id,
            name=data.name,
            module=data.module,
            description=data.description,
            deployed_version=None,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._database.transaction() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict(f"You have a program named {data.name!r}", details={"name": data.name}) from None
        return self._program_out(row, 0)

    async def delete_program(self, principal: Principal, program_id: str) -> None:
        """The program and every version of it. Its datasets stay (delete them on their own). A
        cycle still running for it fails when it comes to store its version (the program is gone)."""
        async with self._database.transaction() as session:
            row = await repo.owned_program(session, principal.user_id, program_id, for_update=True)
            if row is None:
                raise _not_found("program", program_id)
            await repo.delete_program(session, program_id)

    @staticmethod
    def _program_out(row: DSPyProgram, latest: int, versions: list[VersionOut] | None = None) -> ProgramOut:
        return ProgramOut(
            id=row.id,
            name=row.name,
            module=row.module,
            description=row.description,
            deployed_version=row.deployed_version,
            latest_version=latest,
            created_at=row.created_at,
            updated_at=row.updated_at,
            versions=versions,
        )

    async def list_programs(self, principal: Principal) -> list[ProgramOut]:
        async with self._database.reader() as session:
            rows = await repo.programs(session, principal.user_id)
            return [self._program_out(row, await repo.latest_version(session, row.id)) for row in rows]

    async def program_id_by_name(self, principal: Principal, name: str) -> str | None:
        async with self._database.reader() as session:
            row = await repo.program_by_name(session, principal.user_id, name)
        return row.id if row is not None else None

    async def _program(self, principal: Principal, program_id: str) -> DSPyProgram:
        async with self._database.reader() as session:
            row = await repo.owned_program(session, principal.user_id, program_id)
        if row is None:
            raise _not_found("program", program_id)
        return row

    def _expect(self, program: DSPyProgram, version: int) -> dict[str, Any]:
        return {"format": FORMAT, "owner_id": program.owner_id, "program_id": program.id, "version": version}

    def _verify(self, program: DSPyProgram, row: DSPyProgramVersion) -> dict[str, Any]:
        from trellis.dspy.optimize import ProgramIntegrityError, verify

        document = verify(self._key, row.document, row.tag, self._expect(program, row.version))
        if document.get("dataset_id") != row.dataset_id:
            raise ProgramIntegrityError(details={"program_id": program.id, "version": row.version})
        return document

    def _checked(self, program: DSPyProgram, row: DSPyProgramVersion) -> _Verified:
        from trellis.dspy.optimize import ProgramIntegrityError

        try:
            return _Verified(row, self._verify(program, row))
        except ProgramIntegrityError:
            return _Verified(row, None)

    @staticmethod
    def _version_out(program: DSPyProgram, item: _Verified) -> VersionOut:
        row, doc = item.row, item.document
        base = {
            "version": row.version,
            "deployed": program.deployed_version == row.version,
            "dataset_id": row.dataset_id,
            "run_id": row.run_id,
            "created_at": row.created_at,
        }
        if doc is None:
            return VersionOut(intact=False, split=None, **base)
        split = doc["split"]
        return VersionOut(
            intact=True,
            split={k: len(split[k]) for k in ("train", "dev", "test")},
            seed=split["seed"],
            optimizer=doc["optimizer"],
            optimizer_params=doc["params"],
            model=doc["model"],
            scores=doc["scores"],
            demos=doc["demos"],
            model_calls=doc["model_calls"],
            **base,
        )

    async def get_program(self, principal: Principal, program_id: str) -> ProgramOut:
        async with self._database.reader() as session:
            program = await repo.owned_program(session, principal.user_id, program_id)
            if program is None:
                raise _not_found("program", program_id)
            rows = await repo.versions(session, program.id)
        versions = [self._version_out(program, self._checked(program, row)) for row in rows]
        return self._program_out(program, rows[-1].version if rows else 0, versions)

    # --- optimization -------------------------------------------------------------------------------

    def _limits(self, request: OptimizeRequest, dataset_size: int) -> tuple[int, int, int]:
        """(examples used, max labeled demos, model-call budget), or a 400 naming the field over its limit."""
        tuning = self._settings
        if request.max_examples is not None and request.max_examples > tuning.optimize_max_examples:
            raise ValidationFailed.of(
                "max_examples",
                f"at most {tuning.optimize_max_examples} ([dspy] optimize_max_examples)",
                type="less_than_equal",
            )
        if request.max_model_calls is not None and request.max_model_calls > tuning.optimize_max_model_calls:
            raise ValidationFailed.of(
                "max_model_calls",
                f"at most {tuning.optimize_max_model_calls} ([dspy] optimize_max_model_calls)",
                type="less_than_equal",
            )
        if request.max_labeled_demos is not None and request.max_labeled_demos > tuning.max_demos:
            raise ValidationFailed.of(
                "max_labeled_demos", f"at most {tuning.max_demos} ([dspy] max_demos)", type="less_than_equal"
            )
        limit = request.max_examples or tuning.optimize_max_examples
        if dataset_size > limit:
            raise ValidationFailed.of(
                "dataset_id",
                f"the dataset has {dataset_size} examples; the limit is {limit} (max_examples)",
                type="too_long",
            )
        if dataset_size < 5:
            raise ValidationFailed.of(
                "dataset_id", "at least 5 labelled examples are needed (train, dev and test)", type="too_short"
            )
        demos = request.max_labeled_demos if request.max_labeled_demos is not None else tuning.max_demos
        return dataset_size, demos, request.max_model_calls or tuning.optimize_max_model_calls

    def _labels(self, request: OptimizeRequest, module: str, examples: Sequence[Mapping[str, Any]]) -> list[str]:
        outputs = list(self._dspy.registry.module(module).signature.output_fields)
        labels = request.metric_fields or [f for f in outputs if all(e.get(f) is not None for e in examples)]
        unknown = [f for f in labels if f not in outputs]
        if unknown:
            raise ValidationFailed.of(
                "metric_fields", f"{unknown[0]!r} is not an output field of {module!r}", type="unknown_field"
            )
        if not labels or any(e.get(f) is None for e in examples for f in labels):
            raise ValidationFailed.of(
                "metric_fields",
                "the metric compares output fields every example labels; none fit",
                type="missing_label",
            )
        return labels

    def _optimizer_params(
        self, request: OptimizeRequest, module: str, demos: int, sizes: Mapping[str, int]
    ) -> dict[str, Any]:
        """The parameters the chosen optimizer reads, defaults filled in; a parameter it does not
        read is a 400 naming it, as is a combination it cannot run."""
        from trellis.dspy.optimize import DEFAULTS, OPTIMIZERS, gepa_light_budget, miprov2_light_plan

        optimizer = request.optimizer
        reads = OPTIMIZERS[optimizer]
        for name in sorted({n for names in OPTIMIZERS.values() for n in names} - set(reads)):
            if getattr(request, name) is not None:
                raise ValidationFailed.of(
                    name,
                    f"not a parameter of {optimizer} (it reads: {', '.join(reads)})",
                    type="not_used_by_optimizer",
                )
        params: dict[str, Any] = {}
        for name in reads:
            value = getattr(request, name)
            params[name] = value if value is not None else DEFAULTS.get(name)
        if "max_labeled_demos" in params:
            params["max_labeled_demos"] = demos
        if optimizer not in ("miprov2_light", "gepa"):
            return params
        predictors = self._predictors(module)
        if predictors == 0:
            raise ValidationFailed.of(
                "optimizer",
                f"module {module!r} has no predictors: {optimizer} tunes predictors' instructions",
                type="nothing_to_optimize",
            )
        params["predictors"] = predictors
        if optimizer == "miprov2_light":
            if params["max_bootstrapped_demos"] == 0 and params["max_labeled_demos"] > 0:
                # MIPROv2 draws each bootstrapped set's size from 1..max_bootstrapped_demos.
                raise ValidationFailed.of(
                    "max_bootstrapped_demos",
                    "miprov2_light needs at least 1 (or max_labeled_demos 0 too, for instructions only)",
                    type="greater_than_equal",
                )
            plan = miprov2_light_plan(
                sizes["train"], sizes["dev"], predictors, params["max_bootstrapped_demos"], params["max_labeled_demos"]
            )
            chosen = request.model or self._settings.default_model
            params.update(
                auto="light",
                num_candidates=plan["candidates"],
                num_instruction_candidates=plan["instruction_candidates"],
                num_trials=plan["trials"],
                valset="dev",
            )
        else:
            if params["max_metric_calls"] is None:
                params["max_metric_calls"] = gepa_light_budget(predictors, sizes["dev"])
            chosen = params["reflection_model"] or request.model or self._settings.default_model
            params["valset"] = "dev"
        # The optimizer's own calls: which model (404 when unknown), and how long an answer.
        name, model = self._dspy.gateway.resolve(chosen, "chat")
        if optimizer == "gepa":
            params["reflection_model"] = name
        params["optimizer_model"] = name
        params["optimizer_max_tokens"] = min(self._settings.optimizer_max_tokens, model.max_output_tokens)
        return params

    def _optimizer_lm(self, params: Mapping[str, Any]) -> dspy.LM | None:
        """The LM of the optimizer's own calls (MIPROv2's proposals, GEPA's reflections): its model's
        LM, answering up to ``optimizer_max_tokens`` (in ``params``); None for the other optimizers."""
        if "optimizer_model" not in params:
            return None
        lm = self._dspy.lm_for(params["optimizer_model"])
        copied: dspy.LM = lm.copy(max_tokens=params["optimizer_max_tokens"])
        return copied

    def _predictors(self, module: str) -> int:
        """How many predictors (prompts an optimizer can tune) a fresh instance of the module has."""
        instance: Any = self._dspy.registry.module(module)(self._dspy.deps())
        return len(instance.predictors())

    async def _check(self, principal: Principal, program_id: str, request: OptimizeRequest) -> _Request:
        from trellis.dspy.optimize import estimate_model_calls, split_examples

        if Scope.WRITE not in principal.scopes:
            raise PermissionDenied("Optimizing a program needs the 'write' scope", details={"scope": "write"})
        program = await self._program(principal, program_id)
        dataset = await self._dataset(principal, request.dataset_id)
        if dataset.module != program.module:
            raise ValidationFailed.of(
                "dataset_id",
                f"the dataset fits module {dataset.module!r}, the program is of {program.module!r}",
                type="module_mismatch",
            )
        self._dspy.check_scopes(principal, self._dspy.registry.module(program.module))
        if request.model is not None:
            self._dspy.gateway.resolve(request.model, "chat")  # 404 for an unknown model
        size, demos, budget = self._limits(request, dataset.size)
        labels = self._labels(request, program.module, dataset.examples)
        sizes = split_examples(size, request.seed).sizes
        params = self._optimizer_params(request, program.module, demos, sizes)
        estimate = estimate_model_calls(sizes, request.optimizer, params, params.get("predictors", 1))
        if estimate > budget:
            raise ValidationFailed.of(
                "max_model_calls",
                f"this dataset and optimizer need up to {estimate} model calls; the budget is {budget}",
                type="budget_too_small",
                estimated_model_calls=estimate,
            )
        params.update(metric="exact_match", metric_fields=labels, max_model_calls=budget)
        if request.optimizer == "gepa":
            params["metric"] = "exact_match_feedback"
        return _Request(program, dataset, size, params, estimate, budget)

    async def start_optimization(
        self, principal: Principal, program_id: str, request: OptimizeRequest
    ) -> OptimizeStarted:
        """Check the request, then queue the cycle as a workflow run (202 with its id)."""
        checked = await self._check(principal, program_id, request)
        if self._start_run is None:
            raise RuntimeError("optimization runs are not wired in this process (ProgramService.bind_runs)")
        run_id = await self._start_run(
            principal,
            optimize_definition(self._settings.optimize_timeout_seconds),
            {"program_id": checked.program.id, "request": request.model_dump(mode="json")},
        )
        return OptimizeStarted(
            run_id=run_id, program_id=checked.program.id, status="queued", estimated_model_calls=checked.estimate
        )

    async def optimize(
        self,
        principal: Principal,
        program_id: str,
        request: OptimizeRequest,
        *,
        run_id: str | None = None,
        report: Report | None = None,
    ) -> OptimizeOut:
        """Run one cycle now and store its version (the ``dspy.optimize`` step's work). A repeated
        attempt of the same run finds the version it already stored."""
        from trellis.dspy.engine import CallGuard
        from trellis.dspy.optimize import run_optimization

        async def quiet(kind: str, data: Mapping[str, Any]) -> None:
            return None

        emit = report or quiet
        checked = await self._check(principal, program_id, request)
        program, dataset, params = checked.program, checked.dataset, checked.params
        if run_id is not None:
            async with self._database.reader() as session:
                done = await repo.version_of_run(session, program.id, run_id)
            if done is not None:
                return await self._outcome_of(principal, program.id, done.version)
        examples = list(dataset.examples)[: checked.size]
        guard = CallGuard(checked.budget)
        interface = self._dspy.interface(
            principal, program.module, model=request.model, request_id=run_id, patient=True, guard=guard
        )
        inputs = list(self._dspy.registry.module(program.module).signature.input_fields)
        started = time.perf_counter()
        outcome = await run_optimization(
            interface,
            examples,
            inputs=inputs,
            labels=params["metric_fields"],
            optimizer=request.optimizer,
            params=params,
            seed=request.seed,
            guard=guard,
            report=emit,
            optimizer_lm=self._optimizer_lm(params),
        )
        document = {
            "format": FORMAT,
            "owner_id": principal.user_id,
            "program_id": program.id,
            "module": program.module,
            "dataset_id": dataset.id,
            "split": outcome.split.as_record(),
            "optimizer": request.optimizer,
            "params": params,
            "model": interface.model,
            "scores": outcome.scores,
            "demos": outcome.demos,
            "model_calls": outcome.model_calls,
            "estimated_model_calls": checked.estimate,
            "seconds": time.perf_counter() - started,
            "state": outcome.state,
        }
        version = await self._store(principal, program.id, dataset.id, document, run_id=run_id, deploy=request.deploy)
        out = await self._outcome_of(principal, program.id, version)
        await emit("dspy.stored", {"version": out.version, "deployed": out.deployed})
        return out

    async def _store(
        self,
        principal: Principal,
        program_id: str,
        dataset_id: str,
        document: dict[str, Any],
        *,
        run_id: str | None,
        deploy: bool,
    ) -> int:
        """The next version, signed; deployed in the same transaction when it beats the deployed one."""
        from trellis.dspy.optimize import ProgramIntegrityError, sign

        for _ in range(3):  # a concurrent cycle took the number: take the next
            try:
                async with self._database.transaction() as session:
                    program = await repo.owned_program(session, principal.user_id, program_id, for_update=True)
                    if program is None:
                        raise _not_found("program", program_id)
                    number = await repo.latest_version(session, program.id) + 1
                    text, tag = sign(self._key, {**document, "version": number})
                    now = self._clock.now()
                    session.add(
                        DSPyProgramVersion(
                            program_id=program.id,
                            version=number,
                            document=text,
                            tag=tag,
                            dataset_id=dataset_id,
                            run_id=run_id,
                            created_at=now,
                        )
                    )
                    if deploy:
                        bar = document["scores"]["baseline"]["test"]
                        if program.deployed_version is not None:
                            current = await repo.version(session, program.id, program.deployed_version)
                            try:
                                bar = self._verify(program, current)["scores"]["optimized"]["test"] if current else bar
                            except ProgramIntegrityError:
                                bar = float("inf")  # a deployed version that fails its check is not replaced silently
                        if document["scores"]["optimized"]["test"] > bar:
                            program.deployed_version = number
                    program.updated_at = now
                    return number
            except IntegrityError:
                continue
        raise Conflict("The program was changed concurrently; try again", details={"program": program_id})

    async def _outcome_of(self, principal: Principal, program_id: str, number: int) -> OptimizeOut:
        async with self._database.reader() as session:
            program = await repo.owned_program(session, principal.user_id, program_id)
            row = await repo.version(session, program_id, number) if program else None
        if program is None or row is None:
            raise _not_found("program", program_id)
        doc = self._verify(program, row)
        split = doc["split"]
        return OptimizeOut(
            program_id=program.id,
            version=number,
            deployed=program.deployed_version == number,
            deployed_version=program.deployed_version,
            scores=doc["scores"],
            split={k: len(split[k]) for k in ("train", "dev", "test")},
            demos=doc["demos"],
            model_calls=doc["model_calls"],
        )

    # --- deploy, rollback, run ------------------------------------------------------------------------

    async def _move(
        self, principal: Principal, program_id: str, number: int, *, force: bool, rollback: bool
    ) -> ProgramOut:
        async with self._database.transaction() as session:
            program = await repo.owned_program(session, principal.user_id, program_id, for_update=True)
            if program is None:
                raise _not_found("program", program_id)
            row = await repo.version(session, program.id, number)
            if row is None:
                raise NotFound(
                    f"Program {program.name!r} has no version {number}",
                    details={"program": program.id, "version": number},
                )
            document = self._verify(program, row)
            current = program.deployed_version
            if rollback:
                if current is None or number >= current:
                    raise ValidationFailed.of(
                        "version",
                        f"rollback goes to a version before the deployed one ({current})",
                        type="not_earlier",
                    )
            elif not force and number != current:
                score = document["scores"]["optimized"]["test"]
                if current is None:
                    bar, against = document["scores"]["baseline"]["test"], "the unoptimized module"
                else:
                    deployed = await repo.version(session, program.id, current)
                    assert deployed is not None
                    bar, against = self._verify(program, deployed)["scores"]["optimized"]["test"], f"version {current}"
                if score <= bar:
                    raise Conflict(
                        f"Version {number} does not beat {against} on the held-out test split "
                        f"({score:.3f} vs {bar:.3f}); deploy with force to override",
                        details={"version": number, "test_score": score, "deployed_version": current, "bar": bar},
                    )
            program.deployed_version = number
            program.updated_at = self._clock.now()
        return await self.get_program(principal, program_id)

    async def deploy(self, principal: Principal, program_id: str, request: DeployRequest) -> ProgramOut:
        return await self._move(principal, program_id, request.version, force=request.force, rollback=False)

    async def rollback(self, principal: Principal, program_id: str, request: RollbackRequest) -> ProgramOut:
        return await self._move(principal, program_id, request.version, force=True, rollback=True)

    async def load(
        self,
        principal: Principal,
        program_id: str,
        version: int | None = None,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> DSPyModuleInterface:
        """A version (default: the deployed one) as a runnable ``DSPyModuleInterface``, its
        document checked against its tag first."""
        async with self._database.reader() as session:
            program = await repo.owned_program(session, principal.user_id, program_id)
            if program is None:
                raise _not_found("program", program_id)
            number = version if version is not None else program.deployed_version
            if number is None:
                raise Conflict(
                    f"Program {program.name!r} has no deployed version: optimize it (or deploy a version) first",
                    details={"program": program.id},
                )
            row = await repo.version(session, program.id, number)
        if row is None:
            raise NotFound(f"Program {program.name!r} has no version {number}", details={"version": number})
        document = self._verify(program, row)
        interface = self._dspy.interface(
            principal, program.module, model=model or document.get("model"), request_id=request_id
        )
        module: Any = interface.module  # a TrellisModule: a dspy.Module
        module.load_state(document["state"])
        return interface

    async def run(
        self,
        principal: Principal,
        program_id: str,
        inputs: Any,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> ModuleRunOut:
        """Run the deployed version (a 409 when none is, or when it fails its integrity check)."""
        interface = await self.load(principal, program_id, model=model, request_id=request_id)
        values = self._dspy.validate_inputs(interface.name, inputs)
        data, seconds = await interface.run(values)
        return ModuleRunOut(
            success=True,
            data=data,
            module=interface.name,
            module_type=interface.module_type,
            execution_time=seconds,
            model=interface.model,
        )


@dataclass
class CycleResult:
    program_id: str
    program: str
    module: str
    dataset_id: str
    split: dict[str, int]
    baseline_test_score: float
    optimized_test_score: float
    deployed: bool
    version: int
    deployed_version: int | None
    demos: int
    model_calls: int
    seconds: float


class FourPartOptimizationLoop:
    """The seed's ``FourPartOptimizationLoop.run_cycle``, in process: create (the program, and a
    dataset of ``test_data``) → evaluate → optimize → deploy (if better on the held-out split).
    The REST door runs the same cycle as a workflow run (``ProgramService.start_optimization``)."""

    def __init__(self, programs: ProgramService) -> None:
        self._programs = programs

    async def run_cycle(self, principal: Principal, config: Mapping[str, Any]) -> CycleResult:
        """``config``: ``module_class`` (a registered module), ``program`` (its name; created if
        new), ``test_data`` (labelled examples), ``output_fields`` (what the metric compares),
        ``optimization_objectives`` (kept in the dataset's name only: the metric is exact match),
        ``seed``, ``optimizer``, ``optimizer_params`` (that optimizer's request parameters, e.g.
        ``{"max_metric_calls": 40}`` for ``gepa``), ``max_model_calls``, ``model``."""
        started = time.perf_counter()
        programs = self._programs
        module = str(config["module_class"])
        name = str(config.get("program") or module)
        program_id = await programs.program_id_by_name(principal, name)
        if program_id is None:
            program_id = (await programs.create_program(principal, ProgramCreate(name=name, module=module))).id
        dataset = await programs.create_dataset(
            principal,
            DatasetCreate(name=f"{name}.{new_id('cycle')}"[:128], module=module, examples=list(config["test_data"])),
        )
        request = OptimizeRequest(
            dataset_id=dataset.id,
            optimizer=config.get("optimizer", "bootstrap_few_shot"),
            metric_fields=config.get("output_fields"),
            seed=int(config.get("seed", 0)),
            max_model_calls=config.get("max_model_calls"),
            model=config.get("model"),
            **dict(config.get("optimizer_params") or {}),
        )
        out = await programs.optimize(principal, program_id, request)
        return CycleResult(
            program_id=program_id,
            program=name,
            module=module,
            dataset_id=dataset.id,
            split=out.split,
            baseline_test_score=out.scores["baseline"]["test"],
            optimized_test_score=out.scores["optimized"]["test"],
            deployed=out.deployed,
            version=out.version,
            deployed_version=out.deployed_version,
            demos=out.demos,
            model_calls=out.model_calls,
            seconds=time.perf_counter() - started,
        )
