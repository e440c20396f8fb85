"""Structured output that never lies: schemas checked on the way in, answers checked on the way out.

Every door that asks for JSON (``response_format`` ``json_schema`` / ``json_object``, the REST
``analyze`` door's schema) or offers functions (``tools``) builds a ``CompletionRequest`` whose
``structured`` is true. Providers constrain generation where they can (the local model through a
grammar, ``trellis.gateway.providers.gbnf``); whatever they do, the gateway checks the answer here
before it is cached, logged as a success or returned: an answer that says ``stop`` (or
``tool_calls``) parses as JSON and validates against the schema, and every function call names an
offered function with arguments that validate against its parameters. A ``length`` answer was cut
short and says so; it is not checked.

Validation uses ``jsonschema`` (Draft 2020-12, the dialect OpenAI's structured outputs follow),
with one compiled validator per distinct schema kept in a small LRU.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jsonschema

from trellis.gateway.types import Completion, CompletionRequest, ToolCall
from trellis.kit.errors import ValidationFailed

# OpenAI's rule for function names.
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """Strict JSON: control characters in strings and NaN/Infinity are refused (Python accepts the latter)."""
    return json.loads(text, parse_constant=_reject_constant)


def check_schema(schema: Any, field: str) -> None:
    """A 400 naming ``field`` unless ``schema`` is a valid JSON schema (an object)."""
    if not isinstance(schema, dict):
        raise ValidationFailed.of(field, "must be a JSON schema object", type="dict_type")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        message = f"not a valid JSON schema: {exc.message}" + (f" (at {where})" if where else "")
        raise ValidationFailed.of(field, message, type="invalid_schema") from None


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Why ``value`` does not satisfy ``schema`` (empty when it does)."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    return [f"{'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in errors[:10]]


def _json_problem(text: str, schema: dict[str, Any] | None, *, must_be_object: bool) -> str | None:
    try:
        value = parse_json(text)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if must_be_object and not isinstance(value, dict):
        return "not a JSON object"
    if schema is not None:
        errors = schema_errors(value, schema)
        if errors:
            return "does not match the schema: " + "; ".join(errors)
    return None


def call_problem(call: ToolCall, request: CompletionRequest) -> str | None:
    tools = {t.name: t for t in request.tools}
    tool = tools.get(call.name)
    if tool is None:
        return f"called {call.name!r}, which is not among the offered functions"
    if request.tool_choice not in ("auto", "required") and call.name != request.tool_choice:
        return f"called {call.name!r} instead of {request.tool_choice!r}"
    problem = _json_problem(call.arguments, tool.parameters, must_be_object=True)
    return None if problem is None else f"the arguments of {call.name!r} are {problem}"


def problem(request: CompletionRequest, completion: Completion) -> str | None:
    """Why ``completion`` breaks ``request``'s structure, or None when it keeps it (or was cut short)."""
    if not request.structured or completion.finish_reason not in ("stop", "tool_calls"):
        return None
    if completion.tool_calls:
        if not request.calls_tools:
            return "the model called a function although none may be called"
        for call in completion.tool_calls:
            found = call_problem(call, request)
            if found is not None:
                return found
        return None
    if request.calls_tools and request.tool_choice != "auto":
        return "the model answered without calling a function"
    if request.json_schema is not None:
        found = _json_problem(completion.text, request.json_schema, must_be_object=False)
        return None if found is None else f"the answer is {found}"
    if request.json_object:
        found = _json_problem(completion.text, None, must_be_object=True)
        return None if found is None else f"the answer is {found}"
    return None
