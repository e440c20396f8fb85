"""The four-part optimization loop (create → evaluate → optimize → deploy) and compiled-program files.

PARTIAL (issue 15, part 4): in process only. ``FourPartOptimizationLoop.run_cycle`` builds a
module, splits the labelled examples into train / dev / test (seeded shuffle), scores the module on
the held-out test split, compiles it with DSPy's ``BootstrapFewShot`` on train (dev picks among
bootstrapped candidates when ``BootstrapFewShotWithRandomSearch`` is asked for), scores the
compiled program on test, and saves it as a new version only if it beats the deployed version's
test score. Not built yet: database rows for programs, versions and datasets, the REST and CLI
doors, MIPROv2 / GEPA, running a cycle as a workflow run with progress, rollback.

Compiled programs are saved as JSON (DSPy's ``dump_state``: instructions and demos), never pickle,
with an HMAC-SHA256 tag over the canonical JSON: a file changed by anything but this code is
refused on load (``TamperedProgram``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from trellis.auth.schemas import Principal
from trellis.dspy.interface import call_scope
from trellis.kit.errors import Conflict, ValidationFailed

FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class TamperedProgram(Conflict):
    code = "program_integrity_error"
    default_message = "The saved program does not match its integrity tag: refused"


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ProgramFiles:
    """Compiled programs as JSON files under ``directory/<owner>/<program>/v<version>.json``."""

    def __init__(self, directory: Path, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the integrity key needs at least 32 bytes")
        self._directory = directory
        self._key = key

    def path(self, owner_id: str, program: str, version: int) -> Path:
        if not _NAME.match(program):
            raise ValidationFailed.of("program", "1-64 letters, digits, '_', '-' or '.'", type="pattern")
        return self._directory / owner_id / program / f"v{version}.json"

    def _tag(self, body: dict[str, Any]) -> str:
        return hmac.new(self._key, _canonical(body), hashlib.sha256).hexdigest()

    def save(self, owner_id: str, program: str, version: int, state: dict[str, Any], meta: dict[str, Any]) -> Path:
        body = {
            "format": FORMAT,
            "owner_id": owner_id,
            "program": program,
            "version": version,
            "state": state,
            "meta": meta,
        }
        target = self.path(owner_id, program, version)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = target.with_suffix(".tmp")
        partial.write_text(json.dumps({**body, "hmac": self._tag(body)}, indent=1, sort_keys=True))
        partial.replace(target)  # whole or not at all
        return target

    def load(self, owner_id: str, program: str, version: int) -> dict[str, Any]:
        target = self.path(owner_id, program, version)
        try:
            document = json.loads(target.read_text())
        except FileNotFoundError:
            raise TamperedProgram("The saved program is missing", details={"version": version}) from None
        except ValueError:
            raise TamperedProgram(details={"version": version}) from None
        if not isinstance(document, dict):
            raise TamperedProgram(details={"version": version})
        tag = document.pop("hmac", None)
        if not isinstance(tag, str) or not hmac.compare_digest(tag, self._tag(document)):
            raise TamperedProgram(details={"version": version})
        if (document.get("owner_id"), document.get("program"), document.get("version")) != (owner_id, program, version):
            raise TamperedProgram(details={"version": version})
        return document


def exact_match(fields: Sequence[str]) -> Callable[..., float]:
    """1.0 when every labelled output field equals the prediction's (case and spaces ignored)."""

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        def norm(value: Any) -> str:
            return " ".join(str(value).lower().split()).strip(" .")

        return float(all(norm(getattr(prediction, f, "")) == norm(example[f]) for f in fields))

    return metric


@dataclass
class CycleResult:
    program: str
    module: str
    split: dict[str, int]
    baseline_test_score: float
    optimized_test_score: float
    deployed_test_score: float | None
    deployed: bool
    version: int | None
    demos: int
    seconds: float
    scores: dict[str, list[float]] = field(default_factory=dict)


class FourPartOptimizationLoop:
    """``run_cycle`` as the seed names it; see the module docstring for what is and is not built."""

    def __init__(self, service: Any, files: ProgramFiles) -> None:
        self._service = service
        self._files = files
        self._deployed: dict[tuple[str, str], tuple[int, float]] = {}

    async def _score(
        self, program: Any, examples: Sequence[dspy.Example], metric: Callable[..., float], inputs: Sequence[str]
    ) -> list[float]:
        scores = []
        for example in examples:
            try:
                prediction = await program.acall(**{k: example[k] for k in inputs})
            except Exception:  # noqa: BLE001 - an example the program fails on scores 0, as DSPy's Evaluate does
                scores.append(0.0)
                continue
            scores.append(metric(example, prediction))
        return scores

    async def run_cycle(self, principal: Principal, config: dict[str, Any]) -> CycleResult:
        """``config``: ``module_class`` (a registered module's name), ``program`` (the program's
        name), ``test_data`` (labelled examples: input and output fields), ``output_fields`` (the
        labels the metric compares), ``optimization_objectives`` (recorded), ``seed``."""
        started = time.perf_counter()
        name = str(config["module_class"])
        program_name = str(config.get("program") or name)
        service = self._service
        module_class = service.registry.module(name)
        inputs = list(module_class.signature.input_fields)
        labels = list(config.get("output_fields") or module_class.signature.output_fields)
        rows = list(config["test_data"])
        if len(rows) < 5:
            raise ValidationFailed.of(
                "test_data", "at least 5 labelled examples (train, dev and test)", type="too_short"
            )
        examples = []
        for index, row in enumerate(rows):
            missing = [
                f for f in [*inputs, *labels] if f not in row and module_class.signature.input_fields.get(f) is None
            ]
            if missing:
                raise ValidationFailed.of(f"test_data.{index}", f"lacks {', '.join(missing)}", type="missing")
            examples.append(dspy.Example(**row).with_inputs(*[k for k in inputs if k in row]))
        random.Random(int(config.get("seed", 0))).shuffle(examples)
        n_test = max(1, len(examples) // 5)
        n_dev = max(1, len(examples) // 5)
        test, dev, train = examples[:n_test], examples[n_test : n_test + n_dev], examples[n_test + n_dev :]
        metric = exact_match(labels)

        # 1. create
        interface = service.interface(principal, name, patient=True)
        student = interface.module
        identity, lm, adapter = interface.identity, interface.lm, interface.adapter
        present = [k for k in inputs if k in rows[0]]
        # 2. evaluate (held-out test split)
        with call_scope(identity, lm, adapter):
            baseline = await self._score(student, test, metric, present)

        # 3. optimize: DSPy's optimizers are synchronous; they run in a worker thread and their model
        # calls come back to this loop through the sync engine.
        def compile_program() -> Any:
            with call_scope(identity, lm, adapter):
                optimizer = dspy.BootstrapFewShot(
                    metric=metric,
                    max_bootstrapped_demos=min(4, service.settings.max_demos),
                    max_labeled_demos=service.settings.max_demos,
                    max_rounds=1,
                )
                return optimizer.compile(student.deepcopy(), trainset=train)

        compiled = await asyncio.to_thread(compile_program)
        with call_scope(identity, lm, adapter):
            optimized = await self._score(compiled, test, metric, present)

        # 4. deploy: only a program that beats the deployed one on the held-out split
        optimized_score = sum(optimized) / len(optimized)
        key = (principal.user_id, program_name)
        current = self._deployed.get(key)
        deployed_score = current[1] if current else sum(baseline) / len(baseline)
        version: int | None = None
        deploy = optimized_score > deployed_score
        if deploy:
            version = (current[0] if current else 0) + 1
            state = json.loads(json.dumps(compiled.dump_state(), default=str))
            self._files.save(
                principal.user_id,
                program_name,
                version,
                state,
                {
                    "module": name,
                    "test_score": optimized_score,
                    "baseline_test_score": sum(baseline) / len(baseline),
                    "objectives": list(config.get("optimization_objectives") or []),
                    "dataset": [dict(e) for e in examples],
                    "split": {"train": len(train), "dev": len(dev), "test": len(test)},
                },
            )
            self._deployed[key] = (version, optimized_score)
        demos = sum(len(getattr(p, "demos", []) or []) for _, p in compiled.named_predictors())
        return CycleResult(
            program=program_name,
            module=name,
            split={"train": len(train), "dev": len(dev), "test": len(test)},
            baseline_test_score=sum(baseline) / len(baseline),
            optimized_test_score=optimized_score,
            deployed_test_score=current[1] if current else None,
            deployed=deploy,
            version=version,
            demos=demos,
            seconds=time.perf_counter() - started,
            scores={"baseline": baseline, "optimized": optimized},
        )

    async def load(self, principal: Principal, program: str, version: int) -> Any:
        """A saved version as a runnable module (the file's integrity checked first)."""
        document = self._files.load(principal.user_id, program, version)
        name = document["meta"]["module"]
        interface = self._service.interface(principal, name)
        interface.module.load_state(document["state"])
        return interface
