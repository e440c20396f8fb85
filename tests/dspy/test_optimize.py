"""The optimization cycle (``trellis.dspy.optimize`` and the in-process ``FourPartOptimizationLoop``)
against a fake model that answers well only when it is shown examples (or, for the optimizers that
write instructions, told to consult the atlas); the versions' signatures; the call guard that ends
a run; MIPROv2 "light" and GEPA through the gateway, within their budgets."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from tests.dspy.capitals import ATLAS, EXAMPLES, CapitalModule, oracle, requested_fields, shown_examples_model
from tests.dspy.support import Env, NetworkGuard, dspy_env, no_network
from tests.gateway.upstream import Computed
from trellis.auth.schemas import Principal
from trellis.dspy.engine import BudgetSpent, CallGuard
from trellis.dspy.optimize import (
    ProgramIntegrityError,
    estimate_model_calls,
    gepa_plan,
    miprov2_light_plan,
    run_optimization,
    sign,
    split_examples,
    verify,
)
from trellis.dspy.programs import FourPartOptimizationLoop
from trellis.episodic.models import EpisodicLog
from trellis.gateway.service import InvalidModelOutput
from trellis.kit.errors import Unavailable

__all__ = ["no_network"]  # a fixture


@pytest.fixture
async def env(make_harness: Callable[..., Any]) -> AsyncIterator[Env]:
    async with dspy_env(make_harness) as e:
        e.h.runtime.dspy.registry.register_module("capital", CapitalModule)
        e.up.default["chat"] = Computed(shown_examples_model)
        yield e


async def test_a_cycle_stores_a_version_and_deploys_only_what_beats_the_deployed_one(env: Env) -> None:
    programs = env.h.runtime.dspy_programs
    loop = FourPartOptimizationLoop(programs)
    principal = await env.h.runtime.auth.authenticate(env.alice["Authorization"].removeprefix("Bearer "))
    config = {
        "module_class": "capital",
        "program": "capitals",
        "test_data": EXAMPLES,
        "optimization_objectives": ["accuracy"],
        "seed": 1,
    }
    result = await loop.run_cycle(principal, config)
    assert result.split == {"train": 6, "dev": 2, "test": 2}
    assert result.baseline_test_score == 0.0
    assert result.optimized_test_score == 1.0
    assert (result.deployed, result.version, result.deployed_version) == (True, 1, 1)
    assert result.demos > 0
    # dev and test before and after, and train while bootstrapping: no more than that.
    assert 8 <= result.model_calls <= 2 * 4 + 6
    assert len(env.up.calls("chat")) <= result.model_calls  # the gateway may answer a repeat from its cache

    program = await programs.load(principal, result.program_id)
    answer = await program.execute({"country": "Peru"})
    assert answer["data"] == {"capital": "Lima"}

    again = await loop.run_cycle(principal, config)
    # Every cycle is kept as a version; as good as the deployed one is not better.
    assert (again.version, again.deployed, again.deployed_version) == (2, False, 1)
    shown = await programs.get_program(principal, result.program_id)
    assert [(v.version, v.deployed, v.intact) for v in shown.versions or []] == [(1, True, True), (2, False, True)]


def test_the_split_is_seeded_and_holds_out_a_fifth_for_test() -> None:
    one = split_examples(10, 1)
    assert one == split_examples(10, 1)
    assert one != split_examples(10, 2)
    assert one.sizes == {"train": 6, "dev": 2, "test": 2}
    assert sorted(one.train + one.dev + one.test) == list(range(10))
    assert split_examples(5, 0).sizes == {"train": 3, "dev": 1, "test": 1}


def test_a_signed_document_is_refused_once_changed_or_moved() -> None:
    key = b"k" * 32
    document = {"format": 1, "program_id": "prg_1", "version": 1, "state": {"demos": [{"capital": "Lima"}]}}
    text, tag = sign(key, document)
    expect = {"program_id": "prg_1", "version": 1}
    assert verify(key, text, tag, expect) == document
    with pytest.raises(ProgramIntegrityError):
        verify(key, text.replace("Lima", "Atlantis"), tag, expect)
    with pytest.raises(ProgramIntegrityError):
        verify(b"x" * 32, text, tag, expect)  # another server's key
    with pytest.raises(ProgramIntegrityError):
        verify(key, text, tag, {"program_id": "prg_2", "version": 1})  # a valid document on another row


def test_the_call_guard_counts_calls_and_keeps_the_failure_that_ends_a_run() -> None:
    guard = CallGuard(max_calls=2)
    guard.admit()
    guard.admit()
    with pytest.raises(BudgetSpent):
        guard.admit()
    with pytest.raises(BudgetSpent):  # and from then on
        guard.raise_if_failed()

    guard = CallGuard()
    guard.failed(InvalidModelOutput("bad JSON"))  # one example's bad answer: not the run's end
    guard.raise_if_failed()
    guard.failed(Unavailable("breaker open"))
    guard.failed(Unavailable("another"))
    with pytest.raises(Unavailable, match="breaker open"):
        guard.admit()


# --- MIPROv2 "light" and GEPA ----------------------------------------------------------------------


@pytest.fixture
async def oracle_env(make_harness: Callable[..., Any]) -> AsyncIterator[Env]:
    """The capital module against the oracle, with a second gateway model (``critic``, another
    model id on the same upstream) for GEPA's reflections."""
    async with dspy_env(make_harness, models_on_upstream={"critic": {"model_id": "fake-critic"}}) as e:
        e.h.runtime.dspy.registry.register_module("capital", CapitalModule)
        e.up.default["chat"] = Computed(oracle)
        yield e


async def alice(env: Env) -> Principal:
    return await env.h.runtime.auth.authenticate(env.alice["Authorization"].removeprefix("Bearer "))


async def logged(env: Env) -> list[EpisodicLog]:
    await env.h.runtime.logs.flush()
    async with env.h.runtime.database.session() as session:
        rows = (await session.execute(select(EpisodicLog).where(EpisodicLog.door == "dspy"))).scalars().all()
    return list(rows)


def own_calls(env: Env) -> list[dict[str, Any]]:
    """The optimizer's own calls the upstream received (not the capital module's)."""
    return [c.body for c in env.up.calls("chat") if requested_fields(c.body) != ["capital"]]


async def test_miprov2_light_proposes_and_searches_through_the_gateway_within_its_estimate(
    oracle_env: Env, no_network: NetworkGuard
) -> None:
    env = oracle_env
    programs = env.h.runtime.dspy_programs
    principal = await alice(env)
    config = {"module_class": "capital", "test_data": EXAMPLES, "seed": 1, "optimizer": "miprov2_light"}
    result = await FourPartOptimizationLoop(programs).run_cycle(principal, config)
    assert (result.baseline_test_score, result.optimized_test_score) == (0.0, 1.0)
    assert (result.version, result.deployed) == (1, True)

    (version,) = (await programs.get_program(principal, result.program_id)).versions or []
    assert version.optimizer == "miprov2_light"
    params = version.optimizer_params or {}
    assert {k: params[k] for k in ("auto", "num_candidates", "num_trials", "valset", "predictors")} == {
        "auto": "light",
        "num_candidates": 6,
        "num_trials": 10,  # DSPy's rule for one predictor tuned for instructions and demos
        "valset": "dev",
        "predictors": 1,
    }
    assert (params["max_bootstrapped_demos"], params["max_labeled_demos"]) == (4, 8)
    assert "max_rounds" not in params
    assert "max_metric_calls" not in params
    assert version.scores == {"baseline": {"dev": 0.0, "test": 0.0}, "optimized": {"dev": 1.0, "test": 1.0}}

    # The proposer's calls (dataset summary, program and module descriptions, instructions) were
    # made through the gateway like the module's; every call is in the log as alice's, and the
    # run stayed within what was estimated before it started.
    kinds = {tuple(requested_fields(b)) for b in own_calls(env)}
    assert {("observations",), ("summary",), ("proposed_instruction",)} <= kinds
    # Proposals are longer than answers: up to [dspy] optimizer_max_tokens, capped by the model's 512.
    assert {b["max_tokens"] for b in own_calls(env)} == {512}
    assert (params["optimizer_model"], params["optimizer_max_tokens"]) == ("up", 512)
    plan = miprov2_light_plan(6, 2, 1, 4, 8)
    estimate = 2 * (2 + 2) + plan["runs"] + plan["prompt_calls"]
    assert estimate == estimate_model_calls(result.split, "miprov2_light", params, 1)
    assert 0 < result.model_calls <= estimate <= 2000
    rows = await logged(env)
    assert len(rows) == result.model_calls
    assert {(r.owner_id, r.module, r.requested_model, r.status) for r in rows} == {
        (env.alice_id, "capital", "up", "ok")
    }
    assert len(env.up.calls("chat")) <= result.model_calls  # the rest the gateway's cache answered
    assert no_network.attempts == []


async def test_gepa_reflects_through_the_gateway_on_its_own_model_and_the_instruction_is_what_is_deployed(
    oracle_env: Env, no_network: NetworkGuard
) -> None:
    env = oracle_env
    programs = env.h.runtime.dspy_programs
    principal = await alice(env)
    config = {
        "module_class": "capital",
        "test_data": EXAMPLES,
        "seed": 1,
        "optimizer": "gepa",
        "optimizer_params": {"max_metric_calls": 30, "reflection_model": "critic"},
    }
    result = await FourPartOptimizationLoop(programs).run_cycle(principal, config)
    assert (result.baseline_test_score, result.optimized_test_score, result.deployed) == (0.0, 1.0, True)
    assert result.demos == 0  # GEPA tunes instructions, not demos

    (version,) = (await programs.get_program(principal, result.program_id)).versions or []
    assert version.optimizer == "gepa"
    params = version.optimizer_params or {}
    assert {k: params[k] for k in ("max_metric_calls", "reflection_model", "reflection_minibatch_size")} == {
        "max_metric_calls": 30,
        "reflection_model": "critic",
        "reflection_minibatch_size": 3,
    }
    assert params["metric"] == "exact_match_feedback"
    assert "max_bootstrapped_demos" not in params

    # The reflections went to the reflection model, through the gateway, and read the metric's
    # feedback; the module's calls went to the module's model.
    reflections = own_calls(env)
    assert reflections
    assert {b["model"] for b in reflections} == {"fake-critic"}
    assert {b["max_tokens"] for b in reflections} == {512}
    prompt = json.dumps(reflections[0]["messages"])
    assert "expected" in prompt
    assert "I do not know" in prompt
    assert {c.body["model"] for c in env.up.calls("chat") if requested_fields(c.body) == ["capital"]} == {"fake-model"}
    rows = await logged(env)
    assert len(rows) == result.model_calls
    assert {(r.owner_id, r.module) for r in rows} == {(env.alice_id, "capital")}
    assert {r.requested_model for r in rows} == {"up", "critic"}
    critic = [r for r in rows if r.requested_model == "critic"]
    assert 0 < len(critic) <= gepa_plan(30, 3, 2)["reflection_calls"]
    assert result.model_calls <= 2 * (2 + 2) + gepa_plan(30, 3, 2)["runs"] + gepa_plan(30, 3, 2)["reflection_calls"]

    # What is deployed is the evolved instruction (no demos): it alone makes the answer right.
    program = await programs.load(principal, result.program_id)
    assert (await program.execute({"country": "Peru"}))["data"] == {"capital": "Lima"}
    (call,) = [r for r in await logged(env) if r.id not in {row.id for row in rows}]
    assert call.messages is not None
    assert len(call.messages) == 2
    assert ATLAS in call.messages[0]["content"]
    assert no_network.attempts == []


@pytest.mark.parametrize("optimizer", ["miprov2_light", "gepa"])
async def test_a_run_that_reaches_its_call_budget_stops_there_and_fails(oracle_env: Env, optimizer: str) -> None:
    """The estimate keeps a request from starting over its budget; the guard is what holds if a
    run goes over anyway: the call past the budget is refused, none reaches the upstream after."""
    env = oracle_env
    guard = CallGuard(max_calls=20)
    interface = env.h.runtime.dspy.interface(await alice(env), "capital", patient=True, guard=guard)
    params: dict[str, Any] = {
        "miprov2_light": {"max_bootstrapped_demos": 4, "max_labeled_demos": 8},
        "gepa": {"max_metric_calls": 60, "reflection_minibatch_size": 3},
    }[optimizer]

    async def report(kind: str, data: Any) -> None:
        return None

    with pytest.raises(BudgetSpent):
        await run_optimization(
            interface,
            EXAMPLES,
            inputs=["country"],
            labels=["capital"],
            optimizer=optimizer,
            params=params,
            seed=1,
            guard=guard,
            report=report,
        )
    assert guard.calls == 20
    assert len(await logged(env)) == 20
    assert len(env.up.calls("chat")) <= 20


def test_optuna_and_gepa_import_and_run_without_the_network() -> None:
    """In a fresh interpreter with every connection off this machine refused and recorded:
    importing DSPy's MIPROv2 and GEPA (and optuna, gepa) and running an Optuna study tries none."""
    code = """
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args[:2])
    raise OSError("network blocked")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse
import optuna, gepa, dspy
from dspy.teleprompt import MIPROv2, GEPA
from dspy.teleprompt.gepa.gepa_utils import DspyAdapter
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1, multivariate=True))
study.optimize(lambda t: t.suggest_categorical("x", [0, 1, 2]), n_trials=5)
print(len(study.trials), attempts)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "5 []"


def test_the_estimates_follow_dspys_own_rules() -> None:
    """MIPROv2 light: one predictor tuned for instructions and demos gets 10 trials (12 tuning
    instructions only), a valset over 50 is scored in minibatches; GEPA's bound is its budget plus
    one iteration, and a reflection per minibatch."""
    with_demos = miprov2_light_plan(train=6, dev=2, predictors=1, bootstrapped=4, labeled=8)
    assert (with_demos["trials"], with_demos["instruction_candidates"]) == (10, 3)
    # 4 bootstrapping passes over train (the zero-shot and labelled sets cost nothing), the
    # default program and 10 trials on dev; a summary of 2 calls and 3 proposals of 3 calls.
    assert (with_demos["runs"], with_demos["prompt_calls"]) == (4 * 6 + 11 * 2, 2 + 9)
    zero_shot = miprov2_light_plan(train=6, dev=2, predictors=1, bootstrapped=0, labeled=0)
    assert (zero_shot["trials"], zero_shot["instruction_candidates"]) == (9, 6)
    no_labels = miprov2_light_plan(train=6, dev=2, predictors=1, bootstrapped=2, labeled=0)
    assert no_labels["runs"] == 5 * 6 + 11 * 2  # the labelled set is bootstrapped too
    big = miprov2_light_plan(train=300, dev=80, predictors=2, bootstrapped=4, labeled=4)
    assert big["trials"] == 20
    assert big["valset"] == 80
    assert big["runs"] == 4 * 300 + 80 + 20 * 35 + 4 * 80  # minibatches of 35 and 4 full evaluations
    assert big["prompt_calls"] == 2 + 9 + 2 * 3 * 3
    assert gepa_plan(30, 3, 2) == {"runs": 30 + 10 + 2, "reflection_calls": 11}
    sizes = {"train": 6, "dev": 2, "test": 2}
    assert estimate_model_calls(sizes, "labeled_few_shot", {}) == 8
    assert estimate_model_calls(sizes, "bootstrap_few_shot", {"max_rounds": 2}) == 8 + 12
