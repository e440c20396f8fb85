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


# What the fake model takes as an instruction that teaches it capitals: an optimizer that finds it
# (MIPROv2's proposals, GEPA's reflections, both answered by ``oracle``) makes the program right
# without demos.
ATLAS = "Consult the atlas and answer with the capital city's name."


def requested_fields(body: dict[str, Any]) -> list[str]:
    """The output fields a call asks for: the properties of the JSON schema DSPy's JSON adapter
    sends (the fake answers any signature it is given)."""
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    return list(schema.get("properties") or {})


def oracle(body: dict[str, Any]) -> Ok:
    """The capital module's calls: right when shown worked examples or told to consult the atlas.
    Any other signature's call (an optimizer's own: a dataset summary, a program description, an
    instruction proposal, a reflection) gets the atlas instruction in every field it asks for."""
    fields = requested_fields(body)
    messages = body["messages"]
    if fields == ["capital"]:
        question = messages[-1]["content"]
        country = next(c for c in CAPITALS if f"{c}\n" in question or question.rstrip().endswith(c))
        knows = len(messages) > 2 or ATLAS in messages[0]["content"]
        return Ok(json.dumps({"capital": CAPITALS[country] if knows else "I do not know"}))
    return Ok(json.dumps({f: ATLAS for f in fields}))
