"""/graphql over HTTP: the seed's queries, the same auth, limits and ownership as REST, and the
envelope's codes in every error — on SQLite and PostgreSQL where the database is involved."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from tests.auth.support import assert_ok
from tests.conftest import ADMIN_KEY, JWT_SECRET, Harness
from tests.gateway.upstream import FakeUpstream
from tests.graphql.support import data_of, error_of, field_entries, gql, raw_post
from tests.workflows.support import execute, save
from trellis.settings import Role

ADMIN = Harness.auth(ADMIN_KEY)
HELLO = {
    "input_schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    "steps": [
        {"id": "greet", "type": "transform", "with": {"value": "Hello, {{ input.name }}!"}},
        {"id": "shout", "type": "transform", "with": {"value": "{{ steps.greet.output | upper }}"}},
    ],
    "output": "{{ steps.shout.output }}",
}
STATUS = """query($id: ID!) {
  workflowStatus(id: $id) { id status progress result error workflow version steps { key status } }
}"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("fake-model",)).start()
    yield server
    server.stop()


def fake_model(upstream: FakeUpstream) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": upstream.base_url,
        "model_id": "fake-model",
        "api_key": "sk-test",
        "context_window": 4096,
        "max_output_tokens": 512,
    }


@pytest.fixture
async def h(make_harness: Callable[..., Any], database_url: str, upstream: FakeUpstream) -> AsyncIterator[Harness]:
    upstream.reset()
    async with make_harness(database_url=database_url, models={"up": fake_model(upstream)}) as harness:
        yield harness


# --- the seed's queries ----------------------------------------------------------------------------


async def test_ai_response_is_the_rest_generate_call(h: Harness, alice: dict[str, str]) -> None:
    answer = await gql(
        h,
        'query { aiResponse(prompt: "Say hello.", model: "up") '
        "{ content model tokensUsed responseTime timestamp requestedModel provider cached } }",
        headers=alice,
    )
    ai = data_of(answer)["aiResponse"]
    assert ai["content"] == "Hello from the fake upstream."
    assert ai["model"] == ai["requestedModel"] == "up"
    assert ai["tokensUsed"] == 16
    assert ai["responseTime"] >= 0
    assert ai["timestamp"].endswith("Z")
    assert ai["cached"] is False
    # Logged like any model call, with this door's name, and readable back through userLogs.
    await h.runtime.logs.flush()
    me = assert_ok(await h.client.get("/api/v1/auth/me", headers=alice))
    logs = data_of(
        await gql(
            h,
            "query($u: ID!) { userLogs(userId: $u) { door requestedModel response } }",
            {"u": me["id"]},
            headers=alice,
        )
    )
    assert logs["userLogs"] == [{"door": "graphql", "requestedModel": "up", "response": ai["content"]}]


async def test_ai_response_validation_mirrors_the_rest_400(h: Harness, alice: dict[str, str]) -> None:
    answer = await gql(h, 'query { aiResponse(prompt: "", maxTokens: 0) { content } }', headers=alice)
    error = error_of(answer, "validation_error", path=["aiResponse"])
    assert error["extensions"]["status"] == 400
    assert set(field_entries(error)) == {("prompt", "string_too_short"), ("max_tokens", "greater_than")}
    assert answer["data"] == {"aiResponse": None}
    rest = await h.client.post("/api/v1/ai/generate", json={"prompt": "", "max_tokens": 0}, headers=alice)
    assert {(f["field"], f["type"]) for f in rest.json()["error"]["details"]["fields"]} == set(field_entries(error))

    unknown = await gql(h, 'query { aiResponse(prompt: "hi", model: "nope") { content } }', headers=alice)
    assert error_of(unknown, "not_found_error")["extensions"]["details"]["model"] == "nope"


async def test_workflow_status_of_a_run(h: Harness, alice: dict[str, str]) -> None:
    await save(h, "hello", HELLO, headers=alice)
    run = await execute(h, "hello", {"name": "Ada"}, headers=alice)
    status = data_of(await gql(h, STATUS, {"id": run["id"]}, headers=alice))["workflowStatus"]
    assert status == {
        "id": run["id"],
        "status": "succeeded",
        "progress": 1.0,
        "result": '"HELLO, ADA!"',
        "error": None,
        "workflow": "hello",
        "version": 1,
        "steps": [{"key": "greet", "status": "succeeded"}, {"key": "shout", "status": "succeeded"}],
    }


async def test_system_metrics_for_admins_only(h: Harness, alice: dict[str, str]) -> None:
    await h.client.get("/api/v1/auth/me", headers=alice)
    await h.client.get("/api/v1/auth/me")  # a 401
    query = (
        "{ systemMetrics { version uptimeSeconds http { requests clientErrors serverErrors } "
        "models { calls tokens } breakers { endpoint open } workflows { activeRuns } } }"
    )
    metrics = data_of(await gql(h, query, headers=ADMIN))["systemMetrics"]
    assert metrics["http"]["requests"] >= 2
    assert metrics["http"]["clientErrors"] >= 1
    assert metrics["http"]["serverErrors"] == 0
    rest = assert_ok(await h.client.get("/api/v1/metrics/system", headers=ADMIN))
    assert rest["version"] == metrics["version"]
    assert rest["http"]["requests"] >= metrics["http"]["requests"]

    denied = await gql(h, query, headers=alice)
    assert error_of(denied, "authorization_error", path=["systemMetrics"])["extensions"]["status"] == 403
    assert denied["data"] == {"systemMetrics": None}


async def test_user_logs_own_or_admin(h: Harness) -> None:
    alice_id, alice_key = await h.user_with_key("alice")
    bob_id, bob_key = await h.user_with_key("bob")
    query = "query($u: ID!) { userLogs(userId: $u) { id ownerId } }"
    assert data_of(await gql(h, query, {"u": alice_id}, headers=Harness.auth(alice_key))) == {"userLogs": []}
    denied = await gql(h, query, {"u": alice_id}, headers=Harness.auth(bob_key))
    error_of(denied, "authorization_error", path=["userLogs"])
    assert denied["data"] == {"userLogs": None}
    assert data_of(await gql(h, query, {"u": bob_id}, headers=ADMIN)) == {"userLogs": []}


# --- ownership: another user's object is null with not_found_error, never data -----------------------


async def test_another_users_run_and_context_are_not_found(
    h: Harness, alice: dict[str, str], bob: dict[str, str]
) -> None:
    await save(h, "hello", HELLO, headers=alice)
    run = await execute(h, "hello", {"name": "Ada"}, headers=alice)
    created = data_of(
        await gql(h, 'mutation { createContext(input: {type: "note", content: "secret"}) { id } }', headers=alice)
    )["createContext"]

    for query, variables, path in (
        (STATUS, {"id": run["id"]}, ["workflowStatus"]),
        ("query($id: ID!) { context(id: $id) { id content } }", {"id": created["id"]}, ["context"]),
    ):
        answer = await gql(h, query, variables, headers=bob)
        error = error_of(answer, "not_found_error", path=path)
        assert error["extensions"]["status"] == 404
        assert answer["data"] == {path[0]: None}
        assert "secret" not in str(answer)
        assert "Ada" not in str(answer)
        # Exactly what a missing id answers.
        missing = await gql(h, query, {"id": "ctx_missing" if path == ["context"] else "run_missing"}, headers=bob)
        assert error_of(missing, "not_found_error")["message"] == error["message"]

    # Lists show only the caller's own.
    runs = data_of(await gql(h, "{ workflowRuns { edges { node { id } } } }", headers=bob))
    assert runs == {"workflowRuns": {"edges": []}}
    contexts = data_of(await gql(h, "{ contexts { edges { node { id } } } }", headers=bob))
    assert contexts == {"contexts": {"edges": []}}


# --- credentials, scopes and the rate limit: the REST guard's rules -------------------------------------


async def test_missing_invalid_expired_and_revoked_credentials(h: Harness) -> None:
    query = "{ models { name } }"
    missing = await gql(h, query)
    assert "Missing credentials" in error_of(missing, "authentication_error", path=["models"])["message"]
    assert missing["data"] is None  # models is non-null: the null reaches the root

    invalid = await gql(h, query, headers=Harness.auth("trl_not-a-real-key"))
    assert error_of(invalid, "authentication_error")["message"] == "Invalid API key"

    user_id, key = await h.user_with_key("carol")
    past = datetime.now(UTC) - timedelta(hours=2)
    token = jwt.encode(
        {
            "sub": user_id,
            "iat": int(past.timestamp()),
            "exp": int((past + timedelta(hours=1)).timestamp()),
            "iss": "trellis",
            "aud": "trellis-api",
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    expired = await gql(h, query, headers=Harness.auth(token))
    assert error_of(expired, "authentication_error")["message"] == "Token has expired"

    key_id, short_lived = await h.create_key(user_id, expires_in_days=1)
    assert data_of(await gql(h, query, headers={"X-API-Key": short_lived}))
    h.clock.advance(2 * 86_400)
    lapsed = await gql(h, query, headers={"X-API-Key": short_lived})
    assert error_of(lapsed, "authentication_error")["message"] == "API key has expired"

    assert data_of(await gql(h, query, headers=Harness.auth(key)))
    key_row = next(k for k in await h.runtime.auth.list_keys(h.admin, user_id) if k.id != key_id)
    await h.runtime.auth.revoke_key(h.admin, key_row.id)
    revoked = await gql(h, query, headers=Harness.auth(key))
    assert error_of(revoked, "authentication_error")["message"] == "API key has been revoked"


async def test_scopes_are_checked_per_field(h: Harness) -> None:
    user_id = await h.create_user("viewer", Role.VIEWER)
    _, key = await h.create_key(user_id)
    viewer = Harness.auth(key)
    answer = await gql(
        h,
        'mutation { createContext(input: {type: "note", content: "x"}) { id } }',
        headers=viewer,
    )
    error = error_of(answer, "authorization_error", path=["createContext"])
    assert error["extensions"]["details"] == {"scope": "write"}
    # A read next to it in one document is answered: each field is checked on its own.
    mixed = await gql(h, '{ contexts { edges { cursor } } aiResponse(prompt: "hi") { content } }', headers=viewer)
    assert mixed["data"]["contexts"] == {"edges": []}
    assert mixed["data"]["aiResponse"] is None
    assert error_of(mixed, "authorization_error", path=["aiResponse"])["extensions"]["details"] == {"scope": "ai"}


async def test_rate_limit_is_the_users_rest_budget(make_harness: Callable[..., Any], upstream: FakeUpstream) -> None:
    limits = {
        "developer": {"default": {"capacity": 2, "period_seconds": 60}, "ai": {"capacity": 1, "period_seconds": 60}}
    }
    async with make_harness(rate_limits=limits, models={"up": fake_model(upstream)}) as h:
        _, key = await h.user_with_key("dave")
        auth = Harness.auth(key)
        # One document is one request, however many fields it has.
        assert data_of(
            await gql(h, "{ a: contexts { edges { cursor } } b: contexts { edges { cursor } } }", headers=auth)
        )
        response = await h.client.get("/api/context", headers=auth)  # REST spends the same budget
        assert response.status_code == 200
        refused = await h.client.post("/graphql", json={"query": "{ models { name } }"}, headers=auth)
        error = error_of(refused.json(), "rate_limit_error")
        assert error["extensions"]["status"] == 429
        assert error["extensions"]["details"]["policy"] == "default"
        assert int(refused.headers["retry-after"]) >= 1

        # Each model call spends the AI budget, as each REST call does: two aliased calls, one budget.
        h.clock.advance(60)
        answer = await gql(
            h,
            'query { a: aiResponse(prompt: "1", model: "up") { content } '
            'b: aiResponse(prompt: "2", model: "up") { content } }',
            headers=auth,
        )
        errors = answer["errors"]
        assert len(errors) == 1
        assert errors[0]["extensions"]["code"] == "rate_limit_error"
        assert errors[0]["extensions"]["details"]["policy"] == "ai"
        assert sum(1 for value in answer["data"].values() if value is not None) == 1


# --- documents that are not well formed -----------------------------------------------------------------


async def test_syntax_errors_and_unknown_fields_are_validation_errors(harness: Harness) -> None:
    syntax = await gql(harness, "{ models { name }", headers=ADMIN)
    error = error_of(syntax, "validation_error")
    assert field_entries(error) == [("query", "graphql_syntax")]
    assert error["locations"] == [{"line": 1, "column": 18}]
    assert syntax["data"] is None

    unknown = await gql(harness, "{ models { name colour } nothing }", headers=ADMIN)
    errors = unknown["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["validation_error", "validation_error"]
    assert {e["extensions"]["fields"][0]["type"] for e in errors} == {"graphql_validation"}
    assert "colour" in errors[0]["message"]
    assert "nothing" in errors[1]["message"]

    wrong_type = await gql(harness, '{ contexts(first: "ten") { edges { cursor } } }', headers=ADMIN)
    assert field_entries(error_of(wrong_type, "validation_error")) == [("query", "graphql_validation")]

    bad_variable = await gql(
        harness, "query($n: Int!) { contexts(first: $n) { edges { cursor } } }", {"n": "x"}, headers=ADMIN
    )
    error_of(bad_variable, "validation_error")


async def test_requests_that_are_not_graphql(harness: Harness) -> None:
    response = await raw_post(harness, b"{not json", **ADMIN)
    assert response.status_code == 400
    error = error_of(response.json(), "validation_error")
    assert field_entries(error) == [("", "graphql_request")]
    assert response.headers["cache-control"] == "no-store"

    response = await raw_post(harness, b'{"variables": {}}', **ADMIN)
    assert response.status_code == 400
    assert "No GraphQL query" in error_of(response.json(), "validation_error")["message"]

    response = await harness.client.get(
        "/graphql", params={"query": 'mutation { deleteContext(id: "x") { id } }'}, headers=ADMIN
    )
    assert response.status_code == 400  # mutations only by POST
    error_of(response.json(), "validation_error")


async def test_bad_arguments_name_the_rest_field(harness: Harness) -> None:
    cursor = await gql(harness, '{ contexts(after: "garbage") { edges { cursor } } }', headers=ADMIN)
    error = error_of(cursor, "validation_error", path=["contexts"])
    assert field_entries(error) == [("cursor", "value_error")]
    page = await gql(harness, "{ workflowRuns(first: 0) { edges { cursor } } }", headers=ADMIN)
    assert field_entries(error_of(page, "validation_error")) == [("limit", "value_error")]
    search = await gql(harness, '{ searchContexts(query: "  ") { items { score } } }', headers=ADMIN)
    assert field_entries(error_of(search, "validation_error")) == [("query", "missing")]
