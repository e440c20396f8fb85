"""Keyset page cursors: opaque to clients, a small JSON object to us (base64url, unpadded).

A cursor names the last row of a page by its sort key and id, so the next page starts after it
whatever was inserted meanwhile. One encoding for every list endpoint; a cursor that does not
decode, or was made for another ordering, is a 400 on the ``cursor`` parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from trellis.kit.clock import as_utc
from trellis.kit.errors import ValidationFailed

MAX_CURSOR_CHARS = 512


def invalid_cursor() -> ValidationFailed:
    message = "Invalid cursor: pass back a next_cursor exactly as received, with the same filters and sort"
    return ValidationFailed.of("cursor", message, location="query", summary=message)


def encode_keyset(moment: datetime, row_id: str, **scope: str) -> str:
    """The cursor after the row ``(moment, row_id)``; ``scope`` (the sort, ...) must match when it is read."""
    fields = {"t": as_utc(moment).isoformat(timespec="microseconds"), "i": row_id, **scope}
    payload = json.dumps(fields, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_keyset(cursor: str, **scope: str) -> tuple[datetime, str]:
    """``(moment, row_id)`` of a cursor made by ``encode_keyset`` with the same ``scope``; else a 400."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid_cursor()
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(payload["t"])
        row_id = payload["i"]
        matches = all(payload.get(key) == value for key, value in scope.items())
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        raise invalid_cursor() from None
    if not matches or not isinstance(row_id, str) or moment.tzinfo is None:
        raise invalid_cursor()
    return moment.astimezone(UTC), row_id
