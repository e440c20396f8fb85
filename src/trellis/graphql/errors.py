"""Errors on the GraphQL door: the envelope's codes in each error's ``extensions``.

Every error a client sees carries ``extensions.code`` (the REST envelope's ``error.code``:
``validation_error``, ``authentication_error``, ``not_found_error``, ...) and ``extensions.status``
(the HTTP status REST would answer). A validation error also carries ``extensions.fields``, the
same ``[{field, message, location, type}]`` a REST 400 has in ``details.fields``; other details
(``retry_after_seconds``, ``current_version``, ...) are in ``extensions.details``.

Where they come from:

- a service raised a ``kit.errors.TrellisError``: its code, status, message and details, as REST;
- the document does not parse (``graphql_syntax``), asks for unknown fields or mistyped arguments
  (``graphql_validation``), nests too deep (``query_too_deep``), costs too much
  (``query_too_costly``), is too long (``query_too_large``), has too many aliases
  (``too_many_aliases``) or asks for the schema when introspection is off
  (``introspection_disabled``): a ``validation_error`` whose one field entry names the kind as its
  ``type``;
- anything else: ``internal_error`` with a fixed message; the exception is logged, never shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from graphql import GraphQLError, GraphQLSyntaxError
from pydantic import BaseModel, ValidationError
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import ExecutionContext

from trellis.kit.errors import FieldError, TrellisError, ValidationFailed
from trellis.kit.handlers import validation_failed
from trellis.kit.logging import get_logger
from trellis.kit.request_id import current_request_id

log = get_logger("trellis.graphql")

ModelT = TypeVar("ModelT", bound=BaseModel)

INTERNAL_MESSAGE = "Internal server error"

# Messages of the limits graphql-core and Strawberry enforce, and the type each becomes.
_LIMIT_KINDS = (
    ("exceeds maximum operation depth", "query_too_deep"),
    ("aliases found. Allowed:", "too_many_aliases"),
    ("Document contains more than", "query_too_large"),
    ("introspection has been disabled", "introspection_disabled"),
)


def parse_request(model: type[ModelT], data: Mapping[str, Any]) -> ModelT:
    """Validate a field's arguments with the REST door's request model: the same rules, and a
    failure is the same 400 (``details.fields`` named as REST names them)."""
    from fastapi.exceptions import RequestValidationError

    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise validation_failed(RequestValidationError(errors)) from None


def kind_of(error: GraphQLError) -> str:
    """What sort of refused document this is (the ``type`` of its field entry)."""
    if isinstance(error, GraphQLSyntaxError):
        for needle, kind in _LIMIT_KINDS:
            if needle in error.message:
                return kind
        return "graphql_syntax"
    for needle, kind in _LIMIT_KINDS:
        if needle in error.message:
            return kind
    return "graphql_validation"


def document_error(message: str, kind: str) -> dict[str, Any]:
    """The extensions of an error about the document as a whole (not one of its fields' values)."""
    field = FieldError(field="query", message=message, location="body", type=kind)
    return {"code": ValidationFailed.code, "status": ValidationFailed.status_code, "fields": [field]}


def domain_extensions(exc: TrellisError) -> dict[str, Any]:
    details = dict(exc.details)
    extensions: dict[str, Any] = {"code": exc.code, "status": exc.status_code}
    fields = details.pop("fields", None)
    if fields is not None:
        extensions["fields"] = fields
    if details:
        extensions["details"] = details
    return extensions


def translate(error: GraphQLError) -> GraphQLError:
    """One error as the client sees it (see the module docstring). Rewritten in place, so its class
    stays what graphql-core made it (the socket protocol closes on a ``GraphQLSyntaxError``); only
    ``message``, ``extensions`` and ``path`` are ever shown, never the original exception."""
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if isinstance(original, TrellisError):
        message, extensions = original.message, domain_extensions(original)
    elif original is not None and not isinstance(original, GraphQLError):
        message, extensions = INTERNAL_MESSAGE, {"code": "internal_error", "status": 500}
    elif error.extensions and "code" in error.extensions:
        message, extensions = error.message, dict(error.extensions)
    else:
        message, extensions = error.message, document_error(error.message, kind_of(error))
    request_id = current_request_id()
    if request_id:
        extensions["request_id"] = request_id
    error.message = message
    error.extensions = extensions
    return error


def log_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """What ``Schema.process_errors`` does here: domain errors are answers, not incidents (REST does
    not log a 404 either); anything else is logged with its traceback, once."""
    for error in errors:
        original = error.original_error
        if original is None or isinstance(original, (TrellisError, GraphQLError)):
            continue
        operation = execution_context.operation_name if execution_context is not None else None
        log.error(
            "graphql_unhandled_error",
            path=".".join(str(p) for p in error.path or ()),
            operation=operation,
            error=repr(original),
            exc_info=(type(original), original, original.__traceback__),
        )


class DomainErrors(SchemaExtension):
    """Rewrites every error of a result (single results and each streamed one) with ``translate``."""

    def _rewrite(self, result: object) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [translate(error) for error in errors]  # type: ignore[attr-defined]

    def on_operation(self) -> Iterator[None]:
        self._streamed = False
        yield
        if self._streamed:
            return
        result = self.execution_context.result
        if result is not None:
            self._rewrite(result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self._streamed = True
        self._rewrite(result)
        yield None
