"""Templates in workflow definitions: Jinja2's sandboxed environment, never ``eval``.

A step's ``with`` values, its ``if`` condition, a map's ``over`` and the workflow's ``output`` may
contain ``{{ … }}``. A string that is exactly one expression (``"{{ steps.search.output.hits }}"``)
evaluates to the expression's value, whatever its type (a list stays a list); any other string
containing a template renders to a string. Names available: ``input`` (the run's input), ``steps``
(``steps.<id>.output`` / ``.status`` of the steps that ran before), ``run`` (``id``, ``workflow``,
``version``) and, inside a map, ``item`` and ``index``.

Undefined names and attributes fail loudly (``StrictUndefined``): a template that reads a missing
field is a step failure naming the template, not an empty string slipped into a prompt. The sandbox
refuses attribute access to Python internals (``__class__`` …); its output size is bounded by the
step's own limits. ``references`` reads which steps a template uses, so a definition is checked on
save (``trellis.workflows.definition``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT_NAMES = frozenset({"input", "steps", "run", "item", "index"})
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class TemplateProblem(ValueError):
    """A template that does not parse, or failed when evaluated; the message says why."""


class _DataEnvironment(ImmutableSandboxedEnvironment):
    """Dotted access reads a mapping's key before a method of the same name: templates read JSON,
    and ``input.items`` must be the input's ``items``, not ``dict.items``."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_environment = _DataEnvironment(undefined=StrictUndefined, autoescape=False)


def has_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def _single_expression(source: str) -> str | None:
    match = _SINGLE_EXPRESSION.match(source)
    if match is None:
        return None
    expr = match.group("expr")
    # "{{ a }} and {{ b }}" matches the pattern too: it is a text template, not one expression.
    return None if "{{" in expr or "}}" in expr or "{%" in source else expr


@lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Template:
    try:
        expr = _single_expression(source)
        if expr is not None:
            # Parse the expression on its own so its AST is what compile_expression will run.
            return _environment.parse("{{ " + expr.strip() + " }}")
        return _environment.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Any:
    expr = _single_expression(source)
    try:
        if expr is not None:
            return ("expr", _environment.compile_expression(expr.strip(), undefined_to_none=False))
        return ("text", _environment.from_string(source))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None


def builtin_names() -> frozenset[str]:
    """Names every template may use without declaring them: Jinja's globals (range, dict, namespace,
    ...) and the loop variable of a for block."""
    return frozenset(_environment.globals) | {"loop"}


def check(source: str) -> None:
    """Raise ``TemplateProblem`` if ``source`` does not parse."""
    _parse(source)


def references(source: str) -> tuple[set[str], set[str]]:
    """(root names, step ids) a template reads. ``steps.x`` and ``steps['x']`` both name step x."""
    tree = _parse(source)
    roots = {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load"}
    step_ids: set[str] = set()
    for node in _step_accesses(tree):
        step_ids.add(node)
    return roots, step_ids


def _step_accesses(tree: nodes.Node) -> Iterator[str]:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if not (isinstance(target, nodes.Name) and target.name == "steps"):
            continue
        if isinstance(node, nodes.Getattr):
            yield node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            yield node.arg.value


def locally_bound(source: str) -> set[str]:
    """Names a template binds itself (``{% set x %}``, loop variables): not references to check."""
    tree = _parse(source)
    return {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}


def evaluate(source: str, scope: Mapping[str, Any]) -> Any:
    """The value of a templated string in ``scope`` (see the module docstring)."""
    if not has_template(source):
        return source
    kind, compiled = _compiled(source)
    try:
        if kind == "expr":
            value = compiled(**scope)
            if isinstance(value, StrictUndefined):
                str(value)  # raises UndefinedError naming what is missing
            return value
        return compiled.render(**scope)
    except UndefinedError as exc:
        raise TemplateProblem(f"{source!r}: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"{source!r}: not allowed: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{source!r}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateProblem(f"{source!r}: {type(exc).__name__}: {exc}") from None


def evaluate_tree(value: Any, scope: Mapping[str, Any]) -> Any:
    """``evaluate`` every string inside lists and mappings (keys are left as they are)."""
    if isinstance(value, str):
        return evaluate(value, scope)
    if isinstance(value, list):
        return [evaluate_tree(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: evaluate_tree(item, scope) for key, item in value.items()}
    return value


def strings_in(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, string) of every templated string inside ``value``."""
    if isinstance(value, str):
        if has_template(value):
            yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings_in(item, f"{path}.{index}" if path else str(index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(item, f"{path}.{key}" if path else str(key))
