"""A GraphQL client over HTTP for the tests (httpx against the app), and what they assert with."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Harness

PATH = "/graphql"


async def gql(
    h: Harness,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    """POST a document; the HTTP status is checked and the GraphQL answer returned whole."""
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    response = await h.client.post(PATH, json=body, headers=headers or {})
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def data_of(answer: dict[str, Any]) -> dict[str, Any]:
    """The data of an answer that must have no errors."""
    assert not answer.get("errors"), answer.get("errors")
    data: dict[str, Any] = answer["data"]
    return data


def error_of(answer: dict[str, Any], code: str, *, path: list[Any] | None = None) -> dict[str, Any]:
    """The one error of an answer, checked to carry the envelope's ``code`` (and ``path``)."""
    errors = answer.get("errors") or []
    assert len(errors) == 1, errors
    [error] = errors
    assert error["extensions"]["code"] == code, error
    if path is not None:
        assert error.get("path") == path, error
    assert "Traceback" not in str(error)
    return dict(error)


def field_entries(error: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, type)`` of each entry of a validation error's ``extensions.fields``."""
    return [(f["field"], f["type"]) for f in error["extensions"]["fields"]]


async def raw_post(h: Harness, body: bytes, content_type: str = "application/json", **headers: str) -> httpx.Response:
    return await h.client.post(PATH, content=body, headers={"Content-Type": content_type, **headers})
