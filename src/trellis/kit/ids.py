"""Identifiers: random, URL-safe, with a short type prefix so an id says what it names."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
