"""Grammars (GBNF) that constrain the local model's output: JSON for a schema, any JSON object, or a
function call in the local model's wire format (``{"name": "<fn>", "arguments": {...}}``).

The schema-to-grammar translation is llama-cpp-python's own ``SchemaConverter`` (a port of
llama.cpp's ``json-schema-to-grammar``), corrected in two places. In 0.3.36 its JSON string
character is ``[^"\\]``, so a string may hold raw control characters (a newline, a tab), which is
not JSON (RFC 8259 section 7): the output then ends with ``stop`` and does not parse. Ours excludes
U+0000-U+001F (and DEL) and allows only JSON's escapes, as llama.cpp's own ``json.gbnf`` does. The
same goes for ``.`` in a ``pattern``, which the converter lets match a quote or a control character
inside the string it builds. Keywords the converter ignores (``minimum``, ``uniqueItems``, ...) are
not constrained; the gateway validates every structured answer after generation
(``trellis.gateway.structured``), so an answer the grammar let through but the schema does not
accept is never returned as a success.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llama_cpp.llama_grammar import BuiltinRule, SchemaConverter

from trellis.gateway.types import ToolSpec

# One character of a JSON string: anything but a quote, a backslash or a control character, or an escape.
JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'

# Any JSON object (OpenAI's json_object), after llama.cpp's json.gbnf, with whitespace bounded.
JSON_OBJECT = rf"""root ::= object
value ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}}" ws
array ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" char* "\"" ws
char ::= {JSON_CHAR}
number ::= ("-"? ([0-9] | [1-9] [0-9]{{0,15}})) ("." [0-9]{{1,16}})? ([eE] [-+]? [0-9]{{1,3}})? ws
ws ::= | " " | "\n" [ \t]{{0,20}}
"""

# A plain-text answer beside a function call ("auto"): it may not start with "{" (that is a call) nor
# with whitespace (so the first character decides which it is).
_TEXT = r"[^{ \t\r\n] [\U00000001-\U0010FFFF]*"


class UnsupportedSchema(ValueError):
    """The converter cannot turn this schema into a grammar (an external $ref, an unknown construct)."""


class _Converter(SchemaConverter):
    # llama_cpp's converter is untyped: its calls below are marked.
    """llama-cpp-python's converter with JSON-correct string characters (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        if name == "char":
            rule = BuiltinRule(JSON_CHAR, [])
        result: str = super()._add_primitive(name, rule)
        return result

    def _add_rule(self, name: str, rule: str) -> str:
        if name == "dot":
            rule = JSON_CHAR
        result: str = super()._add_rule(name, rule)  # type: ignore[no-untyped-call]
        return result

    def add(self, schema: dict[str, Any], name: str, url: str) -> str:
        """The rule name of ``schema``'s values (``name == ""`` makes it the root)."""
        try:
            resolved = self.resolve_refs(json.loads(json.dumps(schema)), url)
            rule: str = self.visit(resolved, name)  # type: ignore[no-untyped-call]
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise UnsupportedSchema(str(exc) or type(exc).__name__) from exc
        return rule

    def literal(self, text: str) -> str:
        result: str = self._format_literal(text)  # type: ignore[no-untyped-call]
        return result

    def grammar(self) -> str:
        result: str = self.format_grammar()  # type: ignore[no-untyped-call]
        return result


def schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar whose sentences are JSON values of ``schema`` (as far as the converter goes)."""
    converter = _Converter()
    converter.add(schema, "", "schema")
    return converter.grammar()


def call_prefix(name: str) -> str:
    """How the local model's call of function ``name`` starts; its arguments follow, then ``}``."""
    return '{"name": ' + json.dumps(name) + ', "arguments": '


def tools_grammar(
    tools: Sequence[ToolSpec],
    choice: str,
    *,
    answer_schema: dict[str, Any] | None = None,
    answer_object: bool = False,
) -> str:
    """A function call of one of ``tools`` (``choice`` "required"), of the named one, or ("auto")
    either a call or an answer: text that does not start with ``{``, or JSON of ``answer_schema`` /
    any object when the caller also asked for a response format."""
    converter = _Converter()
    offered = [t for t in tools if choice in ("auto", "required") or t.name == choice]
    calls = []
    for i, tool in enumerate(offered):
        arguments = converter.add(tool.parameters, f"call{i}-arguments", f"tool{i}")
        calls.append(converter._add_rule(f"call{i}", f'{converter.literal(call_prefix(tool.name))} {arguments} "}}"'))
    alternatives = [" | ".join(calls)]
    if choice == "auto":
        if answer_schema is not None:
            alternatives.append(converter.add(answer_schema, "answer", "answer"))
        elif answer_object:
            alternatives.append(converter.add({"type": "object"}, "answer", "answer"))
        else:
            alternatives.append(converter._add_rule("answer", _TEXT))
    converter._add_rule("root", " | ".join(alternatives))
    return converter.grammar()
