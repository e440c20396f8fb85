"""Values a JSON body can carry that can be neither stored nor sent: lone UTF-16 surrogates, and
numbers no float can hold.

JSON lets a string hold ``\\ud800`` without the other half of its pair, and Python's ``json``
decodes that escape (and the raw bytes ``ED A0 80``) into a ``str`` that no UTF-8 encoder accepts:
the database driver, the token counter and the response serializer each fail on it, some after a
row was already committed. So the request edge refuses such a body before any handler sees it
(``RequestEdgeMiddleware``), naming the field, and what an older version may have stored is read
back with U+FFFD in place of each lone surrogate (``trellis.storage.base.SafeJSON``).

Numbers: Python's ``json`` reads ``1e400`` as ``inf`` and accepts the non-standard ``NaN`` and
``Infinity``; stored as JSON they silently became ``null``. The edge refuses them the same way.

Hand-written: these are properties of Python's str and float, and no library checks them for a
whole document.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

# A JSON escape of a surrogate, or a surrogate encoded as UTF-8 bytes: only then is a body parsed
# and walked. A false alarm (a pair, or an escaped backslash before "u") only costs that walk.
_HINT = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_LONE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


# NaN / Infinity literals, an exponent of three digits or more, or a run of 300+ digits.
_NUMBER_HINT = re.compile(rb"NaN|Infinity|[eE][+]?0*[1-9][0-9]{2}|[0-9]{300}")


def may_hold_lone_surrogates(raw: bytes) -> bool:
    return _HINT.search(raw) is not None


def may_hold_huge_numbers(raw: bytes) -> bool:
    return _NUMBER_HINT.search(raw) is not None


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def first_path(
    value: Any, is_bad: Callable[[Any], bool], *, keys: bool = False, path: tuple[str, ...] = ()
) -> tuple[str, ...] | None:
    """The path (keys and list indexes) of the first value in a JSON document that ``is_bad``, in
    document order; with ``keys``, a dict key that ``is_bad`` counts too (its path ends in the key,
    lone surrogates shown as U+FFFD)."""
    if is_bad(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            if keys and is_bad(key):
                return (*path, replace_lone_surrogates(key))
            found = first_path(item, is_bad, keys=keys, path=(*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = first_path(item, is_bad, keys=keys, path=(*path, str(index)))
            if found is not None:
                return found
    return None


def _is_unencodable(value: Any) -> bool:
    return isinstance(value, str) and has_lone_surrogate(value)


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def lone_surrogate_path(value: Any) -> tuple[str, ...] | None:
    """The path of the first string, or key, holding a lone surrogate."""
    return first_path(value, _is_unencodable, keys=True)


def non_finite_path(value: Any) -> tuple[str, ...] | None:
    """The path of the first number that is not finite (``inf``, ``nan``)."""
    return first_path(value, _is_non_finite)


def replace_lone_surrogates(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings and keys replaced by U+FFFD."""
    if isinstance(value, str):
        return _LONE.sub(REPLACEMENT, value) if has_lone_surrogate(value) else value
    if isinstance(value, dict):
        return {replace_lone_surrogates(k): replace_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_lone_surrogates(item) for item in value]
    return value
