"""Assertions shared by the auth tests: the envelope shape, error codes and field errors."""

from __future__ import annotations

import re
from typing import Any

import httpx

ENVELOPE_KEYS = {"success", "data", "error", "timestamp", "request_id"}
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _check_envelope(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == ENVELOPE_KEYS, body
    assert _TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    assert body["request_id"], body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def assert_ok(response: httpx.Response, status: int = 200) -> Any:
    """The response is a success envelope with this status; returns its data."""
    assert response.status_code == status, response.text
    body = _check_envelope(response)
    assert body["success"] is True, body
    assert body["error"] is None, body
    return body["data"]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an error envelope with this status and code; returns its ``error``."""
    assert response.status_code == status, response.text
    body = _check_envelope(response)
    assert body["success"] is False, body
    assert body["data"] is None, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert isinstance(error["details"], dict), error
    if status == 401:
        assert response.headers.get("www-authenticate") == "Bearer"
    return error


def field_names(error: dict[str, Any]) -> set[str]:
    """The fields a validation error names."""
    return {f["field"] for f in error["details"]["fields"]}
