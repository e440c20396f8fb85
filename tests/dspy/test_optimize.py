"""The optimization cycle (``trellis.dspy.optimize`` and the in-process ``FourPartOptimizationLoop``)
against a fake model that answers well only when it is shown examples; the versions' signatures;
the call guard that ends a run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.dspy.capitals import EXAMPLES, CapitalModule, shown_examples_model
from tests.dspy.support import Env, dspy_env
from tests.gateway.upstream import Computed
from trellis.dspy.engine import BudgetSpent, CallGuard
from trellis.dspy.optimize import ProgramIntegrityError, sign, split_examples, verify
from trellis.dspy.programs import FourPartOptimizationLoop
from trellis.gateway.service import InvalidModelOutput
from trellis.kit.errors import Unavailable


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
