"""Keyset page cursors: opaque to clients, a small JSON object to us (base64url, unpadded).

A cursor names the last row of a page by its sort key and id, so the next page starts after it
whatever was inserted meanwhile. One encoding for every list endpoint; a cursor that does not
decode, or was made for another ordering, is a 400 on the ``cursor`` parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from trellis.kit.errors import ValidationFailed

MAX_CURSOR_CHARS = 512


def encode_cursor(fields: dict[str, Any]) -> str:
    payload = json.dumps(fields, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def invalid_cursor() -> ValidationFailed:
    message = "Invalid cursor: pass back a next_cursor exactly as received, with the same filters and sort"
    return ValidationFailed.of("cursor", message, location="query", summary=message)


def decode_cursor(cursor: str) -> dict[str, Any]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid_cursor()
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid_cursor() from None
    if not isinstance(payload, dict):
        raise invalid_cursor()
    return payload
