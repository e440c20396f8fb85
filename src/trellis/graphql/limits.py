"""What one GraphQL document may ask for, checked before anything runs (``[graphql]`` settings).

- **Depth** (``max_depth``): Strawberry's ``QueryDepthLimiter`` rule; fragments count where they
  are spread, introspection fields are not counted.
- **Cost** (``max_cost``): every field costs 1, and what a list field selects is paid once per item
  it can return: its page size (``first`` or ``limit``, given literally or as a variable) or
  ``default_list_cost``. A connection's ``first`` sizes its ``edges``. Nested lists multiply, so
  ``contexts(first: 50) { edges { node { relationships { other { id } } } } }`` costs about
  ``50 * (relationships' 10 * 2)``. Introspection fields are free.
- **Size** (``max_tokens``): graphql-core stops parsing a document longer than this many tokens.
- **Aliases** (``max_aliases``): so one document cannot repeat an expensive field a thousand times.

Each refusal is a ``validation_error`` naming the document (``trellis.graphql.errors``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_nullable_type,
    is_list_type,
    parse,
)
from graphql.language import OperationType as AstOperationType
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.schema import validate_document

from trellis.graphql.errors import document_error
from trellis.settings.graphql import GraphQLSettings

PAGE_ARGUMENTS = ("first", "limit")
CACHED_DOCUMENTS = 256


class CostEstimate:
    """The cost of one operation, as the module docstring counts it."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        default_list_cost: int,
    ) -> None:
        self._schema = schema
        self._fragments = fragments
        self._variables = variables
        self._default = default_list_cost
        self._memo: dict[tuple[str, str, int | None], int] = {}

    def operation(self, node: OperationDefinitionNode) -> int:
        root = {
            AstOperationType.QUERY: self._schema.query_type,
            AstOperationType.MUTATION: self._schema.mutation_type,
            AstOperationType.SUBSCRIPTION: self._schema.subscription_type,
        }.get(node.operation)
        return self._selections(node.selection_set, root, None, frozenset())

    def _page_size(self, node: FieldNode) -> int | None:
        for argument in node.arguments or ():
            if argument.name.value not in PAGE_ARGUMENTS:
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return max(0, int(value.value))
            if isinstance(value, VariableNode):
                given = self._variables.get(value.name.value)
                if isinstance(given, int) and not isinstance(given, bool):
                    return max(0, given)
        return None

    def _selections(
        self,
        selection_set: SelectionSetNode | None,
        parent: Any,
        pending: int | None,
        visiting: frozenset[str],
    ) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, pending, visiting)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self._schema.get_type(condition.name.value) if condition is not None else parent
                total += self._selections(selection.selection_set, target, pending, visiting)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._spread(selection.name.value, pending, visiting)
        return total

    def _spread(self, name: str, pending: int | None, visiting: frozenset[str]) -> int:
        fragment = self._fragments.get(name)
        if fragment is None or name in visiting:  # unknown or cyclic: validation reports it
            return 0
        target = self._schema.get_type(fragment.type_condition.name.value)
        key = (name, getattr(target, "name", ""), pending)
        if key not in self._memo:
            self._memo[key] = self._selections(fragment.selection_set, target, pending, visiting | {name})
        return self._memo[key]

    def _field(self, node: FieldNode, parent: Any, pending: int | None, visiting: frozenset[str]) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 0
        definition = parent.fields.get(name) if isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType)) else None
        if definition is None:  # an unknown field: validation reports it
            return 1
        own = self._page_size(node)
        field_type: GraphQLOutputType = get_nullable_type(definition.type)
        if is_list_type(field_type):
            items = own if own is not None else pending if pending is not None else self._default
            inner: Any = field_type
            while is_list_type(inner := get_nullable_type(inner)):
                inner = inner.of_type
            return 1 + items * self._selections(node.selection_set, inner, None, visiting)
        return 1 + self._selections(node.selection_set, field_type, own, visiting)


def _arguments(node: Any) -> Iterator[ArgumentNode]:
    yield from getattr(node, "arguments", None) or ()
    for key in ("definitions", "selection_set"):
        child = getattr(node, key, None)
        if child is None:
            continue
        for item in child if isinstance(child, tuple | list) else child.selections:
            yield from _arguments(item)


class Prepared:
    """One query text, parsed, with what was learned about it: its validation errors (per set of
    rules) and its operations' costs (per page-size variables). Cached by text: graphql-core's
    nodes hash their whole tree, so documents are never used as cache keys themselves."""

    MAX_COSTS = 64

    def __init__(self, document: DocumentNode) -> None:
        self.document = document
        found = {
            argument.value.name.value
            for argument in _arguments(document)
            if argument.name.value in PAGE_ARGUMENTS and isinstance(argument.value, VariableNode)
        }
        self.page_variables = tuple(sorted(found))
        self._validated: dict[tuple[int, tuple[Any, ...]], list[GraphQLError]] = {}
        self._costs: dict[tuple[int, tuple[Any, ...], int], list[tuple[OperationDefinitionNode, int]]] = {}

    def validate(self, schema: GraphQLSchema, rules: tuple[Any, ...]) -> list[GraphQLError]:
        """Fresh copies of the validation errors (an answer rewrites its errors in place)."""
        key = (id(schema), rules)
        if key not in self._validated:
            self._validated[key] = validate_document(schema, self.document, rules)
        return [_fresh(error) for error in self._validated[key]]

    def costs(
        self, schema: GraphQLSchema, variables: Mapping[str, Any], default_list_cost: int
    ) -> list[tuple[OperationDefinitionNode, int]]:
        pages = tuple(variables.get(name) for name in self.page_variables)
        try:
            key = (id(schema), pages, default_list_cost)
            cached = self._costs.get(key)
        except TypeError:  # a page variable that is not hashable (a list): it is not a page size anyway
            key, cached = None, None
        if cached is not None:
            return cached
        fragments = {d.name.value: d for d in self.document.definitions if isinstance(d, FragmentDefinitionNode)}
        estimate = CostEstimate(
            schema, fragments, dict(zip(self.page_variables, pages, strict=True)), default_list_cost
        )
        found = [
            (definition, estimate.operation(definition))
            for definition in self.document.definitions
            if isinstance(definition, OperationDefinitionNode)
        ]
        if key is not None:
            if len(self._costs) >= self.MAX_COSTS:
                self._costs.clear()
            self._costs[key] = found
        return found


@functools.lru_cache(maxsize=CACHED_DOCUMENTS)
def prepare(query: str, max_tokens: int) -> Prepared:
    """The query text parsed (a ``GraphQLSyntaxError`` is raised, and not cached)."""
    return Prepared(parse(query, max_tokens=max_tokens))


def cost_errors(costs: list[tuple[OperationDefinitionNode, int]], max_cost: int) -> list[GraphQLError]:
    """The operations that cost more than ``max_cost``."""
    errors = []
    for definition, cost in costs:
        if cost > max_cost:
            name = definition.name.value if definition.name else "anonymous"
            message = (
                f"'{name}' costs {cost}, over the limit of {max_cost}: ask for smaller pages "
                "(first / limit) or fewer nested lists"
            )
            extensions = document_error(message, "query_too_costly")
            extensions["details"] = {"cost": cost, "max_cost": max_cost}
            errors.append(GraphQLError(message, definition, extensions=extensions))
    return errors


def _fresh(error: GraphQLError) -> GraphQLError:
    """A copy of a cached error, so rewriting it for one answer (``errors.translate``) leaves the cache alone."""
    return GraphQLError(
        error.message, error.nodes, error.source, error.positions, error.path, error.original_error, error.extensions
    )


def limits_extension(settings: GraphQLSettings) -> Callable[[], SchemaExtension]:
    """A factory of the extension that parses and validates each query text once (cached by text,
    with the depth and alias rules) and checks the cost (once per text and page-size variables)."""
    fixed = (depth_rule(settings.max_depth, None, None), aliases_rule(settings.max_aliases))

    class DocumentChecks(SchemaExtension):
        prepared: Prepared | None = None

        def on_operation(self) -> Iterator[None]:
            context = self.execution_context
            context.parse_options["max_tokens"] = settings.max_tokens
            context.validation_rules = (*context.validation_rules, *fixed)
            yield

        def on_parse(self) -> Iterator[None]:
            context = self.execution_context
            if context.graphql_document is None and context.query:
                # A document that does not parse is parsed again by Strawberry, which reports it.
                with contextlib.suppress(GraphQLError):
                    self.prepared = prepare(context.query, settings.max_tokens)
                    context.graphql_document = self.prepared.document
            yield

        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            document = context.graphql_document
            assert document is not None
            schema = context.schema._schema
            prepared = self.prepared if self.prepared is not None else Prepared(document)
            errors = prepared.validate(schema, context.validation_rules)
            if not errors:
                costs = prepared.costs(schema, context.variables or {}, settings.default_list_cost)
                errors = cost_errors(costs, settings.max_cost)
            context.pre_execution_errors = errors
            yield

    return DocumentChecks
