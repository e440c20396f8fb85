"""One optimization cycle's work, without storage: split → evaluate → optimize → evaluate again;
and the signature that makes a stored compiled program tamper-evident.

``run_optimization`` takes a module ready to run as its caller (``DSPyModuleInterface``), labelled
examples and an optimizer, and answers the compiled state (DSPy's ``dump_state``: instructions and
demos, JSON) with its scores on the dev and test splits before and after. Deciding what to keep
and what to deploy is ``ProgramService``'s job (``programs.py``), which stores the result.

The split is a seeded shuffle: test and dev are each a fifth of the examples (at least one),
train the rest. The test split is held out: the optimizer never sees it, and deploy decisions are
made on it. Optimizers: ``bootstrap_few_shot`` (DSPy's ``BootstrapFewShot``: runs the module on
train and keeps the traces the metric accepts as demos) and ``labeled_few_shot`` (demos straight
from train, no model calls to compile).

Every model call goes through the gateway as the caller, counted by a ``CallGuard`` (the run's
budget); a failure that must end the run (an open breaker, a provider down, the budget spent) stops
the cycle at once, raised as the product's error, instead of being scored as zeros the way DSPy's
evaluators treat a failed example.

Compiled programs are stored as canonical JSON, never pickle, with an HMAC-SHA256 tag over the
exact text (``sign`` / ``verify``): a document changed by anything but this code is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from trellis.dspy.engine import CallGuard
from trellis.dspy.interface import DSPyModuleInterface, call_scope
from trellis.kit.errors import Conflict

FORMAT = 1
OPTIMIZERS = ("bootstrap_few_shot", "labeled_few_shot")

# (event type, data): how a cycle reports progress (a workflow step's ``ctx.emit``).
Report = Callable[[str, Mapping[str, Any]], Awaitable[None]]


class ProgramIntegrityError(Conflict):
    code = "program_integrity_error"
    default_message = "The stored program does not match its integrity tag: refused"


def canonical(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign(key: bytes, document: Mapping[str, Any]) -> tuple[str, str]:
    """(the document's canonical text, its HMAC-SHA256 tag in hex)."""
    text = canonical(document)
    return text, hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, text: str, tag: str, expect: Mapping[str, Any]) -> dict[str, Any]:
    """The document, if ``tag`` is the HMAC of ``text`` and the document says it is what ``expect``
    names (its owner, program and version: a valid document copied onto another row is refused)."""
    good = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(good, tag):
        raise ProgramIntegrityError(details={k: v for k, v in expect.items() if k != "owner_id"})
    try:
        document = json.loads(text)
    except ValueError:
        raise ProgramIntegrityError(details={k: v for k, v in expect.items() if k != "owner_id"}) from None
    if not isinstance(document, dict) or any(document.get(k) != v for k, v in expect.items()):
        raise ProgramIntegrityError(details={k: v for k, v in expect.items() if k != "owner_id"})
    return document


def exact_match(fields: Sequence[str]) -> Callable[..., float]:
    """1.0 when every labelled output field equals the prediction's (case and spaces ignored)."""

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        def norm(value: Any) -> str:
            return " ".join(str(value).lower().split()).strip(" .")

        return float(all(norm(getattr(prediction, f, "")) == norm(example[f]) for f in fields))

    return metric


@dataclass(frozen=True)
class Split:
    seed: int
    train: list[int]
    dev: list[int]
    test: list[int]

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}

    def as_record(self) -> dict[str, Any]:
        return {"seed": self.seed, "train": self.train, "dev": self.dev, "test": self.test}


def split_examples(count: int, seed: int) -> Split:
    """Example indices: a fifth test, a fifth dev (at least one each), the rest train."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_test = max(1, count // 5)
    n_dev = max(1, count // 5)
    return Split(seed, order[n_test + n_dev :], order[n_test : n_test + n_dev], order[:n_test])


def estimate_model_calls(sizes: Mapping[str, int], optimizer: str, max_rounds: int) -> int:
    """Module runs a cycle makes at most: dev and test scored before and after, and (for
    ``bootstrap_few_shot``) each train example once per round. A module with several predictors
    makes that many calls per run: the run's guard counts the real calls."""
    evaluations = 2 * (sizes["dev"] + sizes["test"])
    compiling = sizes["train"] * max_rounds if optimizer == "bootstrap_few_shot" else 0
    return evaluations + compiling


@dataclass
class CycleOutcome:
    split: Split
    state: dict[str, Any]
    scores: dict[str, dict[str, float]]
    per_example: dict[str, list[float]] = field(default_factory=dict)
    demos: int = 0
    model_calls: int = 0


async def _score(
    interface: DSPyModuleInterface,
    program: Any,
    examples: Sequence[dspy.Example],
    metric: Callable[..., float],
    inputs: Sequence[str],
    guard: CallGuard,
) -> list[float]:
    scores = []
    with call_scope(interface.identity, interface.lm, interface.adapter):
        for example in examples:
            try:
                prediction = await program.acall(**{k: example[k] for k in inputs if k in example})
            except Exception:  # noqa: BLE001 - a failed example scores 0, as DSPy's Evaluate does...
                guard.raise_if_failed()  # ...unless the failure ends the run (breaker, budget)
                scores.append(0.0)
                continue
            scores.append(metric(example, prediction))
    return scores


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


async def run_optimization(
    interface: DSPyModuleInterface,
    rows: Sequence[Mapping[str, Any]],
    *,
    inputs: Sequence[str],
    labels: Sequence[str],
    optimizer: str,
    params: Mapping[str, Any],
    seed: int,
    guard: CallGuard,
    report: Report,
) -> CycleOutcome:
    """Evaluate the module on dev and test, compile it on train, evaluate the result; raise the
    product's error when the guard recorded a failure that ends the run."""
    split = split_examples(len(rows), seed)
    examples = [dspy.Example(**dict(row)).with_inputs(*[k for k in inputs if k in row]) for row in rows]
    train = [examples[i] for i in split.train]
    dev = [examples[i] for i in split.dev]
    test = [examples[i] for i in split.test]
    metric = exact_match(labels)
    student: Any = interface.module  # a TrellisModule: a dspy.Module
    await report("dspy.split", split.sizes)

    per_example: dict[str, list[float]] = {}
    for name, subset in (("dev", dev), ("test", test)):
        per_example[f"baseline_{name}"] = await _score(interface, student, subset, metric, inputs, guard)
    guard.raise_if_failed()
    baseline = {"dev": _mean(per_example["baseline_dev"]), "test": _mean(per_example["baseline_test"])}
    await report("dspy.evaluated", {"program": "baseline", **baseline, "model_calls": guard.calls})

    identity, lm, adapter = interface.identity, interface.lm, interface.adapter
    demos = int(params["max_labeled_demos"])

    def compile_program() -> Any:
        # DSPy's optimizers are synchronous: they run in a worker thread and their model calls come
        # back to the event loop through the sync engine.
        with call_scope(identity, lm, adapter):
            if optimizer == "labeled_few_shot":
                teleprompter: Any = dspy.LabeledFewShot(k=demos)
            else:
                teleprompter = dspy.BootstrapFewShot(
                    metric=metric,
                    max_bootstrapped_demos=int(params["max_bootstrapped_demos"]),
                    max_labeled_demos=demos,
                    max_rounds=int(params["max_rounds"]),
                )
            return teleprompter.compile(student.deepcopy(), trainset=train)

    await report("dspy.compiling", {"optimizer": optimizer, "train": len(train)})
    try:
        compiled = await asyncio.to_thread(compile_program)
    except Exception:
        guard.raise_if_failed()
        raise
    guard.raise_if_failed()
    count = sum(len(getattr(p, "demos", []) or []) for _, p in compiled.named_predictors())
    await report("dspy.compiled", {"demos": count, "model_calls": guard.calls})

    for name, subset in (("dev", dev), ("test", test)):
        per_example[f"optimized_{name}"] = await _score(interface, compiled, subset, metric, inputs, guard)
    guard.raise_if_failed()
    optimized = {"dev": _mean(per_example["optimized_dev"]), "test": _mean(per_example["optimized_test"])}
    await report("dspy.evaluated", {"program": "optimized", **optimized, "model_calls": guard.calls})
    state = json.loads(json.dumps(compiled.dump_state(), default=str))
    return CycleOutcome(
        split=split,
        state=state,
        scores={"baseline": baseline, "optimized": optimized},
        per_example=per_example,
        demos=count,
        model_calls=guard.calls,
    )
