"""A labelled task for the optimization tests: country → capital, and a fake model that answers
well only when the prompt carries worked examples, so BootstrapFewShot's demos are what makes a
program better (0.0 → 1.0 on the held-out split)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import dspy

from tests.gateway.upstream import Ok
from trellis.dspy.modules.base import TrellisModule

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
EXAMPLES = [{"country": c, "capital": k} for c, k in CAPITALS.items()]


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
