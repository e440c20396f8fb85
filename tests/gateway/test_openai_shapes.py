"""The OpenAI door's successful answers match the shapes its OpenAPI document promises.

The schemathesis run (tests/test_openapi_contract.py) seldom gets a 200 from /v1: a generated model
name is rarely a configured one. Here each /v1 operation is called with a valid request against a
fake upstream, and the answer is validated with jsonschema against the document's own 200 schema,
so the document and the dicts the handlers build cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest

from tests.conftest import ADMIN_KEY, Harness
from tests.gateway.upstream import FakeUpstream

AUTH = Harness.auth(ADMIN_KEY)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("fake-model", "fake-embed")).start()
    yield server
    server.stop()


def promised(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    """The JSON schema of a 200 answer, with the document's components reachable for $ref."""
    schema: dict[str, Any] = document["paths"][path][method]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    return {**schema, "components": document["components"]}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/models", None),
        ("post", "/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}),
        ("post", "/v1/completions", {"model": "fake-model", "prompt": "hi"}),
        ("post", "/v1/embeddings", {"model": "fake-embed", "input": ["a", "b"]}),
        ("post", "/v1/embeddings", {"model": "fake-embed", "input": "a", "encoding_format": "base64"}),
    ],
)
async def test_answers_match_the_document(
    make_harness: Callable[..., Any], upstream: FakeUpstream, method: str, path: str, body: dict[str, Any] | None
) -> None:
    models = {
        name: {"provider": "openai", "base_url": upstream.base_url, "model_id": name, "capabilities": caps}
        for name, caps in (("fake-model", ["chat"]), ("fake-embed", ["embed"]))
    }
    async with make_harness(models=models) as h:
        response = await h.client.request(method.upper(), path, json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        schema = promised(h.app.openapi(), path, method)
        jsonschema.validate(response.json(), schema)
        # And the validation is not vacuous: a field the document requires, removed, fails it.
        broken = {k: v for k, v in response.json().items() if k != "object"}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
