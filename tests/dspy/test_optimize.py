"""The optimization loop (partial: in process) against a fake model that answers well only when it is
shown examples, so BootstrapFewShot's demos are what makes the program better; program files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import dspy
import pytest

from tests.dspy.support import Env, dspy_env
from tests.gateway.upstream import Computed, Ok
from trellis.dspy.modules.base import TrellisModule
from trellis.dspy.optimize import FourPartOptimizationLoop, ProgramFiles, TamperedProgram

CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Chile": "Santiago",
    "Cuba": "Havana",
    "Iran": "Tehran",
}


class CapitalSignature(dspy.Signature):  # type: ignore[misc]
    """Name the capital city of the country."""

    country: str = dspy.InputField()
    capital: str = dspy.OutputField()


class CapitalModule(TrellisModule):
    signature: ClassVar[type[dspy.Signature]] = CapitalSignature
    description: ClassVar[str] = "test"

    def __init__(self, deps: Any) -> None:
        super().__init__(deps)
        self.predict = dspy.Predict(CapitalSignature)

    async def aforward(self, country: str) -> dspy.Prediction:  # type: ignore[override]
        return await self.predict.acall(country=country)


def shown_examples_model(body: dict[str, Any]) -> Ok:
    """Right only when the prompt carries worked examples (few-shot demos are extra turns)."""
    messages = body["messages"]
    question = messages[-1]["content"]
    country = next(c for c in CAPITALS if c in question)
    knows = len(messages) > 2
    return Ok(json.dumps({"capital": CAPITALS[country] if knows else "I do not know"}))


@pytest.fixture
async def env(make_harness: Callable[..., Any]) -> AsyncIterator[Env]:
    async with dspy_env(make_harness) as e:
        e.h.runtime.dspy.registry.register_module("capital", CapitalModule)
        e.up.default["chat"] = Computed(shown_examples_model)
        yield e


async def test_a_cycle_deploys_only_what_beats_the_deployed_version(env: Env, tmp_path: Path) -> None:
    files = ProgramFiles(tmp_path / "programs", b"k" * 32)
    loop = FourPartOptimizationLoop(env.h.runtime.dspy, files)
    principal = await env.h.runtime.auth.authenticate(env.alice["Authorization"].removeprefix("Bearer "))
    data = [{"country": c, "capital": k} for c, k in CAPITALS.items()]
    config = {
        "module_class": "capital",
        "program": "capitals",
        "test_data": data,
        "optimization_objectives": ["accuracy"],
        "seed": 1,
    }
    result = await loop.run_cycle(principal, config)
    assert result.split == {"train": 6, "dev": 2, "test": 2}
    assert result.baseline_test_score == 0.0
    assert result.optimized_test_score == 1.0
    assert result.deployed
    assert result.version == 1
    assert result.demos > 0

    saved = files.load(principal.user_id, "capitals", 1)
    assert saved["meta"]["test_score"] == 1.0
    assert len(saved["meta"]["dataset"]) == 10
    program = await loop.load(principal, "capitals", 1)
    answer = await program.execute({"country": "Peru"})
    assert answer["data"] == {"capital": "Lima"}

    again = await loop.run_cycle(principal, config)
    assert not again.deployed  # as good as the deployed version is not better
    assert again.version is None

    path = files.path(principal.user_id, "capitals", 1)
    document = json.loads(path.read_text())
    document["state"]["predict"]["demos"][0]["capital"] = "Atlantis"
    path.write_text(json.dumps(document))
    with pytest.raises(TamperedProgram):
        files.load(principal.user_id, "capitals", 1)
    # Another owner's name for the same file is not a way in either.
    with pytest.raises(TamperedProgram):
        files.load(env.bob_id, "capitals", 1)
