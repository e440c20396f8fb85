"""One optimization cycle's work, without storage: split → evaluate → optimize → evaluate again;
and the signature that makes a stored compiled program tamper-evident.

``run_optimization`` takes a module ready to run as its caller (``DSPyModuleInterface``), labelled
examples and an optimizer, and answers the compiled state (DSPy's ``dump_state``: instructions and
demos, JSON) with its scores on the dev and test splits before and after. Deciding what to keep
and what to deploy is ``ProgramService``'s job (``programs.py``), which stores the result.

The split is a seeded shuffle: test and dev are each a fifth of the examples (at least one),
train the rest. The test split is held out: the optimizer never sees it, and deploy decisions are
made on it. Optimizers (``OPTIMIZERS``, each with the request parameters it reads):

* ``bootstrap_few_shot``: DSPy's ``BootstrapFewShot``: runs the module on train and keeps the
  traces the metric accepts as demos.
* ``labeled_few_shot``: demos straight from train, no model calls to compile.
* ``miprov2_light``: DSPy's ``MIPROv2(auto="light")``: bootstraps candidate demo sets on train,
  has the model propose instructions (a dataset summary, the program, a tip), then searches the
  combinations with Optuna's TPE sampler, scoring each on dev (the validation set it is given).
* ``gepa``: DSPy's ``GEPA``: runs the module on train, shows a reflection model the traces and the
  metric's feedback (which field was wrong, what was expected), and evolves the instructions,
  keeping a Pareto front of candidates scored on dev; ``max_metric_calls`` module runs at most.

Every model call goes through the gateway as the caller — the optimizers' own (MIPROv2's
proposals, GEPA's reflections) too, on the same user, the same ``ai`` rate budget and the episodic
log — counted by a ``CallGuard`` (the run's budget); a failure that must end the run (an open
breaker, a provider down, the budget spent) stops the cycle at once, raised as the product's
error, instead of being scored as zeros the way DSPy's evaluators treat a failed example.
``estimate_model_calls`` is what a request is checked against before a run starts.

Compiled programs are stored as canonical JSON, never pickle, with an HMAC-SHA256 tag over the
exact text (``sign`` / ``verify``): a document changed by anything but this code is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from trellis.dspy.engine import CallGuard
from trellis.dspy.interface import DSPyModuleInterface, call_scope
from trellis.kit.errors import Conflict

FORMAT = 1
# Each optimizer and the request parameters it reads: any other one set is a 400 naming it.
OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "bootstrap_few_shot": ("max_bootstrapped_demos", "max_labeled_demos", "max_rounds"),
    "labeled_few_shot": ("max_labeled_demos",),
    "miprov2_light": ("max_bootstrapped_demos", "max_labeled_demos"),
    "gepa": ("max_metric_calls", "reflection_model", "reflection_minibatch_size"),
}
# Parameters any optimizer may be given; the ones above default to these when it reads them.
DEFAULTS: dict[str, Any] = {"max_bootstrapped_demos": 4, "max_rounds": 1, "reflection_minibatch_size": 3}

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
        return float(all(_norm(getattr(prediction, f, "")) == _norm(example[f]) for f in fields))

    return metric


def _norm(value: Any) -> str:
    return " ".join(str(value).lower().split()).strip(" .")


def exact_match_feedback(fields: Sequence[str]) -> Callable[..., Any]:
    """Exact match as GEPA wants its metric: five arguments, and a score with feedback in words
    (which field was wrong, what was expected, what came) for the reflection model to read."""

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        wrong = [f for f in fields if _norm(getattr(pred, f, "")) != _norm(gold[f])]
        if not wrong:
            return dspy.Prediction(score=1.0, feedback="Correct: every field matches the expected answer.")
        said = "; ".join(f"{f}: expected {str(gold[f])!r}, the answer was {str(getattr(pred, f, ''))!r}" for f in wrong)
        return dspy.Prediction(score=0.0, feedback=f"Wrong. {said}.")

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


def miprov2_light_plan(train: int, dev: int, predictors: int, bootstrapped: int, labeled: int) -> dict[str, int]:
    """What ``MIPROv2(auto="light")`` does with these sizes (DSPy 3.4's own rules, from
    ``mipro_optimizer_v2``, ``create_n_fewshot_demo_sets`` and ``GroundedProposer``): how many
    candidates, trials, bootstrapping passes over train, and at most how many calls its prompt
    model and its trials make. A module run is counted as one call, as everywhere here."""
    from dspy.teleprompt.mipro_optimizer_v2 import AUTO_RUN_SETTINGS, MIN_MINIBATCH_SIZE

    light = AUTO_RUN_SETTINGS["light"]
    n = int(light["n"])
    zero_shot = bootstrapped == 0 and labeled == 0
    instructions = n if zero_shot else n // 2
    variables = predictors * (1 if zero_shot else 2)
    trials = int(max(2 * variables * math.log2(n), 1.5 * n))
    valset = min(dev, int(light["val_size"]))
    # Candidate demo sets: the zero-shot one and (with labelled demos) the labelled one cost no
    # calls; every other one is a BootstrapFewShot pass over train.
    passes = n - 1 - (1 if labeled > 0 and not zero_shot else 0)
    # Prompt model: a dataset summary (one call per 10 train examples after the first ten, at most
    # 9, plus the first and the summary) and, per predictor and proposed instruction, a program
    # description, a module description and the instruction itself.
    summary = 2 + min(9, len(range(10, train, 10)))
    proposals = predictors * min(instructions, n) * 3
    if valset > MIN_MINIBATCH_SIZE:
        # Minibatches of 35 and, every 5 trials and at the end, one full evaluation; each full
        # evaluation is added to the study as a trial of its own, which moves the numbering on.
        minibatch, every = 35, 5
        adjusted = trials + trials // every + 1 + (1 if trials % every else 0)
        number, full = 1, 0
        for _ in range(trials):
            number += 1
            if number % (every + 1) == 0 or number == adjusted - 1:
                full += 1
                number += 1
        evaluations = valset + trials * minibatch + full * valset
    else:
        evaluations = valset * (1 + trials)
    return {
        "candidates": n,
        "instruction_candidates": instructions,
        "trials": trials,
        "valset": valset,
        "prompt_calls": summary + proposals,
        "runs": passes * train + evaluations,
    }


def gepa_light_budget(predictors: int, valset: int) -> int:
    """GEPA's ``auto="light"`` budget of metric calls (module runs) for this many components and
    validation examples: DSPy's own formula."""
    from dspy.teleprompt.gepa.gepa import AUTO_RUN_SETTINGS, GEPA

    # auto_budget reads nothing from the instance (DSPy 3.4): called on the class, no GEPA built.
    budget: int = GEPA.auto_budget(
        None, num_preds=max(predictors, 1), num_candidates=AUTO_RUN_SETTINGS["light"]["n"], valset_size=valset
    )
    return budget


def gepa_plan(max_metric_calls: int, minibatch: int, dev: int) -> dict[str, int]:
    """At most how many module runs and reflection calls ``GEPA(max_metric_calls=...)`` makes.
    GEPA checks its budget between iterations, so the last one may go over it by what one
    iteration runs: the parent and the new candidate on a minibatch (a merge: on a subsample of at
    most 5 shared validation examples each) and, when the candidate is kept, dev in full. Each
    reflection follows at least one minibatch of runs."""
    step = 2 * max(minibatch, 5) + dev
    return {"runs": max_metric_calls + step, "reflection_calls": max_metric_calls // minibatch + 1}


def estimate_model_calls(
    sizes: Mapping[str, int], optimizer: str, params: Mapping[str, Any], predictors: int = 1
) -> int:
    """Model calls a cycle makes at most, counting a module run as one call: dev and test scored
    before and after, and the optimizer's work — for ``bootstrap_few_shot`` each train example
    once per round, for ``miprov2_light`` its bootstrapping passes, proposals and trials, for
    ``gepa`` its runs and reflections (see ``miprov2_light_plan`` and ``gepa_plan``). A module
    with several predictors makes that many calls per run: the run's guard counts the real calls
    and stops the run at its budget."""
    evaluations = 2 * (sizes["dev"] + sizes["test"])
    if optimizer == "bootstrap_few_shot":
        return evaluations + sizes["train"] * int(params["max_rounds"])
    if optimizer == "miprov2_light":
        plan = miprov2_light_plan(
            sizes["train"],
            sizes["dev"],
            predictors,
            int(params["max_bootstrapped_demos"]),
            int(params["max_labeled_demos"]),
        )
        return evaluations + plan["runs"] + plan["prompt_calls"]
    if optimizer == "gepa":
        plan = gepa_plan(int(params["max_metric_calls"]), int(params["reflection_minibatch_size"]), sizes["dev"])
        return evaluations + plan["runs"] + plan["reflection_calls"]
    return evaluations


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


def _compile(
    optimizer: str,
    params: Mapping[str, Any],
    student: Any,
    train: list[dspy.Example],
    dev: list[dspy.Example],
    metric: Callable[..., float],
    labels: Sequence[str],
    seed: int,
    optimizer_lm: dspy.LM | None,
) -> Any:
    """The optimizer's ``compile`` (in a worker thread, inside the caller's ``call_scope``)."""
    if optimizer == "labeled_few_shot":
        return dspy.LabeledFewShot(k=int(params["max_labeled_demos"])).compile(student, trainset=train)
    if optimizer == "bootstrap_few_shot":
        teleprompter = dspy.BootstrapFewShot(
            metric=metric,
            max_bootstrapped_demos=int(params["max_bootstrapped_demos"]),
            max_labeled_demos=int(params["max_labeled_demos"]),
            max_rounds=int(params["max_rounds"]),
        )
        return teleprompter.compile(student, trainset=train)
    if optimizer == "miprov2_light":
        # The task model is the LM in context, the prompt model ``optimizer_lm`` (both the gateway's,
        # called as the caller). Dev is
        # the validation set the trials are scored on (the test split stays held out); nothing is
        # written to disk (no log_dir) and no candidate programs are kept on the result.
        mipro = dspy.MIPROv2(
            metric=metric,
            auto="light",
            prompt_model=optimizer_lm,
            max_bootstrapped_demos=int(params["max_bootstrapped_demos"]),
            max_labeled_demos=int(params["max_labeled_demos"]),
            seed=seed,
            track_stats=False,
            verbose=False,
        )
        return mipro.compile(student, trainset=train, valset=dev)
    if optimizer == "gepa":
        gepa = dspy.GEPA(
            metric=exact_match_feedback(labels),
            max_metric_calls=int(params["max_metric_calls"]),
            reflection_minibatch_size=int(params["reflection_minibatch_size"]),
            reflection_lm=optimizer_lm or dspy.settings.lm,
            seed=seed,
            track_stats=False,
            use_wandb=False,
            use_mlflow=False,
            log_dir=None,
        )
        return gepa.compile(student, trainset=train, valset=dev)
    raise ValueError(f"unknown optimizer {optimizer!r}")


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
    optimizer_lm: dspy.LM | None = None,
) -> CycleOutcome:
    """Evaluate the module on dev and test, compile it on train, evaluate the result; raise the
    product's error when the guard recorded a failure that ends the run. ``optimizer_lm``: the LM
    of the optimizer's own calls, MIPROv2's prompt model or GEPA's reflection model (default: the
    module's)."""
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

    def compile_program() -> Any:
        # DSPy's optimizers are synchronous: they run in a worker thread and their model calls come
        # back to the event loop through the sync engine, as the caller (``call_scope``; DSPy
        # carries it into the threads its evaluators start).
        with call_scope(identity, lm, adapter):
            return _compile(optimizer, params, student.deepcopy(), train, dev, metric, labels, seed, optimizer_lm)

    await report("dspy.compiling", {"optimizer": optimizer, "train": len(train)})
    try:
        compiled = await asyncio.to_thread(compile_program)
    except Exception as exc:  # noqa: BLE001 - what the optimizer raised ends the run as the product's error
        guard.raise_if_failed()
        # e.g. GEPA stops at a reflection whose answer does not parse: a 502 naming the module.
        raise interface.error_of(exc) from None
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
