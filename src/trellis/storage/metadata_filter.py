"""Metadata filters, shared by keyword search, the vector indexes and vector collections.

A filter is ``{key: (value, value, ...)}``: the row's JSON metadata must have, at the top-level
``key``, a value equal to one of the values (several keys: all must match). Equality is JSON-typed:
the string ``"2024"`` does not equal the number ``2024``. Query strings carry only text, so
``metadata_filter_from_strings`` lets ``metadata.year=2024`` match either the string or the number
(and ``true``/``false``/``null`` the boolean or null) — what a person typing a URL means.

Keys are restricted to letters, digits, ``_`` and ``-`` (at most 64): they go into a JSON path on
SQLite, so nothing else is allowed near it, and they are bound as parameters on PostgreSQL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, cast, func, literal, or_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from trellis.kit.errors import ValidationFailed

JsonColumn = QueryableAttribute[Any] | ColumnElement[Any]
MetadataValue = str | int | float | bool | None
MetadataFilter = Mapping[str, tuple[MetadataValue, ...]]

METADATA_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 32


def _check_value(field: str, value: Any) -> MetadataValue:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationFailed.of(field, "numbers must be finite")
        return value
    raise ValidationFailed.of(field, "filter values are strings, numbers, booleans or null")


def check_metadata_filter(raw: Mapping[str, Any], *, field: str = "filter") -> dict[str, tuple[MetadataValue, ...]]:
    """Validate a filter given as JSON (``{key: value}`` or ``{key: [value, ...]}``, any of) in a body."""
    if len(raw) > MAX_FILTER_KEYS:
        raise ValidationFailed.of(field, f"at most {MAX_FILTER_KEYS} keys", type="too_long")
    checked: dict[str, tuple[MetadataValue, ...]] = {}
    for key, value in raw.items():
        name = f"{field}.{key}"
        if not METADATA_KEY.match(key):
            raise ValidationFailed.of(name, "keys are 1-64 letters, digits, '_' or '-'", type="pattern")
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > MAX_FILTER_VALUES:
            raise ValidationFailed.of(name, f"give 1 to {MAX_FILTER_VALUES} values")
        checked[key] = tuple(_check_value(name, v) for v in values)
    return checked


_WORDS: dict[str, MetadataValue] = {"true": True, "false": False, "null": None}
_NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,17})(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?")


def _spelled(text: str) -> list[MetadataValue]:
    """The JSON number, boolean or null that ``text`` spells exactly, if any (as a list of 0 or 1)."""
    if text in _WORDS:
        return [_WORDS[text]]
    if _NUMBER.fullmatch(text):
        number = json.loads(text)
        if isinstance(number, int) or math.isfinite(number):
            return [number]
    return []


def metadata_filter_from_strings(pairs: Iterable[tuple[str, str]], *, prefix: str = "metadata.") -> MetadataFilter:
    """Query-string pairs ``(metadata.KEY, VALUE)`` → a filter; repeated keys mean any of."""
    collected: dict[str, list[MetadataValue]] = {}
    for name, text in pairs:
        key = name[len(prefix) :]
        if not METADATA_KEY.match(key):
            raise ValidationFailed.of(
                name, "keys are 1-64 letters, digits, '_' or '-'", location="query", type="pattern"
            )
        values = collected.setdefault(key, [])
        values.append(text)
        values.extend(_spelled(text))
    if len(collected) > MAX_FILTER_KEYS:
        raise ValidationFailed.of("metadata", f"at most {MAX_FILTER_KEYS} keys", location="query", type="too_long")
    for key, values in collected.items():
        if len(values) > 2 * MAX_FILTER_VALUES:
            raise ValidationFailed.of(
                f"{prefix}{key}", f"at most {MAX_FILTER_VALUES} values", location="query", type="too_long"
            )
    return {key: tuple(values) for key, values in collected.items()}


def _sqlite_equals(column: JsonColumn, key: str, value: MetadataValue) -> ColumnElement[bool]:
    path = f'$."{key}"'  # the key matched METADATA_KEY: no quotes, no path syntax
    kind = func.json_type(column, path)
    if value is None:
        return kind == "null"
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    extracted = func.json_extract(column, path)
    if isinstance(value, int | float):
        return and_(kind.in_(("integer", "real")), extracted == value)
    return and_(kind == "text", extracted == value)


def _postgres_equals(column: JsonColumn, key: str, value: MetadataValue) -> ColumnElement[bool]:
    # jsonb equality compares types and numbers by value (1 = 1.0); the key is a bound parameter.
    return cast(column, JSONB)[literal(key)] == cast(literal(json.dumps(value)), JSONB)


def metadata_clause(dialect: str, column: JsonColumn, filters: MetadataFilter) -> ColumnElement[bool] | None:
    """A WHERE clause for ``filters`` on a JSON ``column``, or None when there is nothing to filter."""
    if not filters:
        return None
    equals = _sqlite_equals if dialect == "sqlite" else _postgres_equals
    clauses: list[ColumnElement[bool]] = []
    for key, values in filters.items():
        if not METADATA_KEY.match(key):  # checked on the way in; checked again where it meets SQL
            raise ValidationFailed.of(
                f"metadata.{key}", "keys are 1-64 letters, digits, '_' or '-'", location="query", type="pattern"
            )
        clauses.append(or_(*(equals(column, key, value) for value in values)))
    return and_(*clauses)
