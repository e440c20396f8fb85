"""Every 400 the product answers has one shape, whichever part of it refused the request.

The test walks the app's routes (every API route, with its parameters and body as the OpenAPI
document describes them) and provokes the 400s it can: generic probes built from each route's
description (malformed JSON, a body that is not an object, an empty object, every property of the
wrong type, bad query, header and path values), then the domain 400s a known bad value reaches on
each route (a bad filter, a duplicate id, a vector of the wrong length, a model that cannot do the
task, a provider refusing the request, ...).

Every 400 must be ``validation_error`` with ``details.fields``: a non-empty list whose entries have
exactly ``field``, ``message``, ``location`` and ``type`` (strings), and ``position`` (an int) on
invalid JSON only. Under ``/v1/`` the answer is OpenAI's shape, whose ``param`` is the first field.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from tests.conftest import ADMIN_KEY, Harness
from tests.gateway.upstream import FakeUpstream, Status
from trellis.settings import Role

ADMIN = Harness.auth(ADMIN_KEY)
FIELD_KEYS = {"field", "message", "location", "type"}
# Optional keys of a field entry, the type of their value, and the entry type that may carry them.
OPTIONAL_FIELD_KEYS: dict[str, tuple[type, str]] = {"position": (int, "json_invalid")}
LOCATIONS = {"body", "query", "path", "header", "cookie"}
MACHINE_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
BODY_METHODS = {"POST", "PUT", "PATCH"}
MALFORMED_JSON = b'{"name": '
# Wrong for every JSON property type the API has (strings, numbers, objects, lists of scalars).
WRONG_TYPE: Any = [[[]]]
QUERY_VALUES = ("", "-1", "not a valid value", "x" * 5000)
# The app has 42 API routes today, 18 of them with a JSON body: fewer means the walk missed some.
MIN_ROUTES = 42
MIN_JSON_BODY_ROUTES = 18
# Today 24 routes answer 188 400s to these probes.
MIN_REJECTING_ROUTES = 24
MIN_REJECTIONS = 150


# --- the routes, as the app describes them ---------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: dict[str, Any]
    schemas: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def params(self, where: str) -> list[str]:
        return [p["name"] for p in self.operation.get("parameters", []) if p["in"] == where]

    @property
    def json_body(self) -> dict[str, Any] | None:
        content = self.operation.get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema")
        if schema is None:
            return None
        if "$ref" in schema:
            resolved: dict[str, Any] = self.schemas[schema["$ref"].rsplit("/", 1)[-1]]
            return resolved
        return dict(schema)

    @property
    def probeable(self) -> bool:
        return bool(self.operation.get("parameters") or self.operation.get("requestBody"))

    def url(self, **values: str) -> str:
        names = self.params("path")
        return self.path.format_map({name: values.get(name, "missing-id") for name in names})


def api_routes(app: FastAPI) -> list[Route]:
    """Every APIRoute of the app (routers included), with its OpenAPI operation."""
    document = app.openapi()
    schemas = document.get("components", {}).get("schemas", {})
    routes = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        if not context.original_route.include_in_schema:
            continue  # HTML pages (the dashboard), not the API: tests/dashboard/ covers their input
        path = context.path
        assert path is not None
        for method in sorted(context.methods or ()):
            operations = document["paths"].get(path, {})
            assert method.lower() in operations, f"{method} {path} is missing from the OpenAPI document"
            routes.append(Route(method, path, operations[method.lower()], schemas))
    return routes


# --- the shape ---------------------------------------------------------------------------------------


def _field_problems(entry: Any) -> Iterator[str]:
    if not isinstance(entry, dict):
        yield f"a field entry is not an object: {entry!r}"
        return
    missing = FIELD_KEYS - set(entry)
    extra = set(entry) - FIELD_KEYS - set(OPTIONAL_FIELD_KEYS)
    if missing:
        yield f"entry {entry} lacks {sorted(missing)}"
    if extra:
        yield f"entry {entry} has unexpected {sorted(extra)}"
    for key in FIELD_KEYS & set(entry):
        if not isinstance(entry[key], str):
            yield f"entry {entry}: {key} is not a string"
    if isinstance(entry.get("message"), str) and not entry["message"]:
        yield f"entry {entry}: empty message"
    if "location" in entry and entry["location"] not in LOCATIONS:
        yield f"entry {entry}: location {entry['location']!r} is not one of {sorted(LOCATIONS)}"
    if isinstance(entry.get("type"), str) and not MACHINE_KIND.match(entry["type"]):
        yield f"entry {entry}: type {entry['type']!r} is not a machine-readable kind"
    for key, (kind, only_on) in OPTIONAL_FIELD_KEYS.items():
        if key in entry and (not isinstance(entry[key], kind) or entry.get("type") != only_on):
            yield f"entry {entry}: {key} must be a {kind.__name__}, on {only_on} entries only"


def shape_problems(
    response: httpx.Response, expect_field: str | None = None, expect_location: str | None = None
) -> list[str]:
    """What is wrong with this 400 (an empty list: nothing). ``expect_field``: a field it must name;
    ``expect_location``: where that field is (without ``expect_field``: where every field is)."""
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON: {response.text[:200]!r}"]
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return [f"no error object: {body!r}"]
    error = body["error"]
    problems: list[str] = []
    if error.get("code") != "validation_error":
        problems.append(f"code is {error.get('code')!r}")
    if not isinstance(error.get("message"), str) or not error["message"]:
        problems.append(f"message is {error.get('message')!r}")
    if response.request.url.path.startswith("/v1/"):
        # OpenAI's shape: the first field, if any, is the param.
        if set(body) != {"error"} or set(error) != {"message", "type", "param", "code"}:
            problems.append(f"not OpenAI's error shape: {body!r}")
        if error.get("type") != "invalid_request_error":
            problems.append(f"type is {error.get('type')!r}")
        param = error.get("param")
        if param is not None and (not isinstance(param, str) or not param):
            problems.append(f"param is {param!r}")
        if expect_field is not None and param != expect_field:
            problems.append(f"param is {param!r}, expected {expect_field!r}")
        return problems
    if body.get("success") is not False or body.get("data") is not None:
        problems.append(f"not an error envelope: {body!r}")
    details = error.get("details")
    if not isinstance(details, dict):
        return [*problems, f"details is {details!r}"]
    fields = details.get("fields")
    if not isinstance(fields, list) or not fields:
        return [*problems, f"details.fields is {fields!r} (details: {details})"]
    for entry in fields:
        problems.extend(_field_problems(entry))
    entries = [entry for entry in fields if isinstance(entry, dict)]
    names = {entry.get("field") for entry in entries}
    if expect_field is not None and expect_field not in names:
        problems.append(f"fields {sorted(map(str, names))} do not name {expect_field!r}")
    if expect_location is not None:
        located = [e for e in entries if expect_field is None or e.get("field") == expect_field]
        problems.extend(
            f"entry {e} is not located in {expect_location!r}" for e in located if e.get("location") != expect_location
        )
    return problems


# --- probing -------------------------------------------------------------------------------------------


@dataclass
class Findings:
    visited: set[str] = field(default_factory=set)
    rejected: Counter[str] = field(default_factory=Counter)  # 400s per route
    malformed_json: set[str] = field(default_factory=set)  # routes whose malformed-JSON probe was a 400
    problems: dict[str, list[str]] = field(default_factory=dict)

    async def send(
        self,
        h: Harness,
        route: Route,
        kind: str,
        *,
        path: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        expect_field: str | None = None,
        expect_location: str | None = None,
        **request: Any,
    ) -> httpx.Response:
        url = route.url(**(path or {}))
        response = await h.client.request(route.method, url, headers={**ADMIN, **(headers or {})}, **request)
        self.visited.add(route.key)
        if response.status_code == 400:
            self.rejected[route.key] += 1
            problems = shape_problems(response, expect_field, expect_location)
            if problems:
                self.problems.setdefault(route.key, []).extend(f"[{kind}] {p}" for p in problems)
        return response


async def generic_probes(h: Harness, findings: Findings, route: Route) -> None:
    """The 400s any route's description lets us provoke."""
    schema = route.json_body
    if schema is not None and route.method in BODY_METHODS:
        response = await findings.send(
            h,
            route,
            "malformed JSON",
            content=MALFORMED_JSON,
            headers={"content-type": "application/json"},
            expect_location="body",
        )
        if response.status_code == 400:
            findings.malformed_json.add(route.key)
        await findings.send(h, route, "body not an object", json=["a", "list"], expect_location="body")
        await findings.send(h, route, "empty object", json={}, expect_location="body")
        properties = schema.get("properties", {})
        if properties:
            wrong = dict.fromkeys(properties, WRONG_TYPE)
            await findings.send(h, route, "wrong types", json=wrong, expect_location="body")
    # Without a body to get wrong, a bad query value is the only thing wrong.
    where = "query" if schema is None else None
    for name in route.params("query"):
        for value in QUERY_VALUES:
            kind = f"query {name}={value[:20]!r}"
            await findings.send(h, route, kind, params={name: value}, expect_location=where)
    for name in route.params("header"):
        await findings.send(h, route, f"header {name}", headers={name: "not a valid value"})
    for name in route.params("path"):
        await findings.send(h, route, f"path {name}", path={name: "x" * 300})


@dataclass(frozen=True)
class Probe:
    """A known bad value for one route: it must answer 400."""

    kind: str
    request: dict[str, Any] = field(default_factory=dict)
    path: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    expect: str | None = None  # the field the answer must name
    before: Callable[[], None] | None = None
    where: str | None = None  # where the expected field is, when not what the probe sends that says it

    @property
    def location(self) -> str | None:
        """Where the expected field is: the header, the query or the body the probe got wrong."""
        if self.expect is None or self.where is not None:
            return self.where
        if self.headers:
            return "header"
        return "query" if "params" in self.request else "body"


@dataclass(frozen=True)
class World:
    context_id: str
    viewer_id: str
    upstream: FakeUpstream


def domain_probes(world: World) -> dict[str, list[Probe]]:
    ctx = {"context_id": world.context_id}
    three = {"name": "three"}  # a collection of 3 dimensions, without a model
    embedded = {"name": "embedded"}  # 4 dimensions, with a model that gives 3

    def refuse() -> None:
        world.upstream.chat(Status(400, "the upstream refuses this request"))

    def search(**params: Any) -> dict[str, Any]:
        return {"params": {"query": "anything", **params}}

    def upload(*parts: tuple[str, tuple[str | None, bytes | str]]) -> dict[str, Any]:
        return {"files": list(parts)}

    a_file = ("files", ("a.md", b"# A\n\ntext\n"))
    return {
        "GET /api/context/search": [
            Probe("empty query", {"params": {"query": " "}}, expect="query"),
            Probe("long query", search(query="x" * 5000), expect="query"),
            Probe("unknown mode", search(mode="fuzzy"), expect="mode"),
            Probe("limit 0", search(limit=0), expect="limit"),
            Probe("bad type", search(type="no spaces allowed"), expect="type"),
            Probe("bad metadata key", search(**{"metadata.b@d": "1"}), expect="metadata.b@d"),
        ],
        "GET /api/v1/db/logs": [
            Probe("bad cursor", {"params": {"cursor": "not-a-cursor"}}, expect="cursor"),
            Probe("since after until", {"params": {"since": "2025-02-01", "until": "2025-01-01"}}, expect="since"),
            Probe("limit 0", {"params": {"limit": 0}}, expect="limit"),
        ],
        "POST /api/context": [
            Probe(
                "duplicate relationship",
                {
                    "json": {
                        "type": "note",
                        "content": "x",
                        "relationships": [
                            {"target_context_id": "ctx_a", "relationship_type": "refines"},
                            {"target_context_id": "ctx_a", "relationship_type": "refines"},
                        ],
                    }
                },
                expect="relationships.1",
            ),
            Probe("bad type", {"json": {"type": "no spaces", "content": "x"}}, expect="type"),
        ],
        "PUT /api/context/{context_id}": [
            Probe("bad If-Match", {"json": {"content": "y"}}, ctx, {"If-Match": "yesterday"}, expect="If-Match"),
            Probe("nothing to update", {"json": {}}, ctx),
            Probe(
                "version disagrees",
                {"json": {"content": "y", "version": 1}},
                ctx,
                {"If-Match": "2"},
                expect="version",
                where="body",
            ),
        ],
        "DELETE /api/context/{context_id}": [
            Probe("bad If-Match", {}, ctx, {"If-Match": "yesterday"}, expect="If-Match"),
        ],
        "POST /api/context/{context_id}/relationships": [
            Probe(
                "relationship to itself",
                {"json": {"target_context_id": world.context_id, "relationship_type": "refines"}},
                ctx,
                expect="target_context_id",
            ),
        ],
        "GET /api/context/{context_id}/graph": [
            Probe("depth too deep", {"params": {"depth": 99}}, ctx, expect="depth"),
            Probe("depth 0", {"params": {"depth": 0}}, ctx, expect="depth"),
        ],
        "POST /api/context/ingest": [
            Probe("unknown form field", upload(("other", (None, "x")), a_file), expect="other"),
            Probe("two types", upload(("type", (None, "a")), ("type", (None, "b")), a_file), expect="type"),
            Probe("bad type", upload(("type", (None, "no spaces!")), a_file), expect="type"),
            Probe("a files part that is not a file", upload(("files", (None, "text")), a_file), expect="files"),
            Probe("no files", upload(("type", (None, "note"))), expect="files"),
            Probe("an empty file", upload(("files", ("empty.md", b"")))),
            Probe("not UTF-8", upload(("files", ("latin.txt", b"caf\xe9 au lait")))),
            Probe("NUL characters", upload(("files", ("nul.txt", b"a\x00b")))),
            Probe("the same name twice", upload(a_file, a_file)),
        ],
        "POST /api/v1/keys": [
            Probe(
                "scopes beyond the owner's role",
                {"json": {"name": "k", "user_id": world.viewer_id, "scopes": ["write"]}},
                expect="scopes",
            ),
        ],
        "POST /api/v1/db/vectors/collections": [
            Probe("unknown model", {"json": {"name": "c", "dimensions": 3, "model": "no-such-model"}}, expect="model"),
            Probe("a chat model", {"json": {"name": "c", "dimensions": 3, "model": "up"}}, expect="model"),
        ],
        **{
            f"{method} /api/v1/db/vectors/collections/{{name}}/items": [
                Probe(
                    "duplicate ids",
                    {"json": {"items": [{"id": "a", "vector": [1, 2, 3]}, {"id": "a", "vector": [1, 2, 3]}]}},
                    three,
                    expect="items.1.id",
                ),
                Probe(
                    "wrong dimensions",
                    {"json": {"items": [{"id": "a", "vector": [1, 2, 3]}, {"id": "b", "vector": [1, 2]}]}},
                    three,
                    expect="items.1.vector",
                ),
                Probe(
                    "text without a model",
                    {"json": {"items": [{"id": "a", "text": "t"}]}},
                    three,
                    expect="items.0.text",
                ),
                Probe(
                    "the model's vectors do not fit",
                    {"json": {"items": [{"id": "a", "text": "t"}]}},
                    embedded,
                    expect="items.0.text",
                ),
            ]
            for method in ("PUT", "POST")
        },
        "POST /api/v1/db/vectors/collections/{name}/query": [
            Probe("bad filter key", {"json": {"vector": [1, 2, 3], "filter": {"b@d": 1}}}, three, expect="filter.b@d"),
            Probe(
                "bad filter value", {"json": {"vector": [1, 2, 3], "filter": {"k": {"a": 1}}}}, three, expect="filter.k"
            ),
            Probe("wrong dimensions", {"json": {"vector": [1, 2]}}, three, expect="vector"),
            Probe("text without a model", {"json": {"text": "t"}}, three, expect="text"),
            Probe("the model's vector does not fit", {"json": {"text": "t"}}, embedded, expect="text"),
        ],
        "POST /api/v1/ai/generate": [
            Probe(
                "max_tokens above the model's",
                {"json": {"model": "up", "prompt": "Hi", "max_tokens": 513}},
                expect="max_tokens",
            ),
            Probe("over the context window", {"json": {"model": "tiny", "prompt": "word " * 60}}, expect="prompt"),
            Probe("a model that cannot chat", {"json": {"model": "embedder", "prompt": "Hi"}}, expect="model"),
            Probe("the provider refuses", {"json": {"model": "up", "prompt": "Hi"}}, before=refuse),
        ],
        "POST /api/v1/ai/chat": [
            Probe(
                "over the context window",
                {"json": {"model": "tiny", "messages": [{"role": "user", "content": "word " * 60}]}},
                expect="messages",
            ),
            Probe(
                "max_tokens above the model's",
                {"json": {"model": "up", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 513}},
                expect="max_tokens",
            ),
        ],
        "POST /api/v1/ai/code": [
            Probe("over the context window", {"json": {"model": "tiny", "task": "word " * 60}}, expect="task"),
        ],
        "POST /api/v1/ai/analyze": [
            Probe(
                "classification without labels",
                {"json": {"model": "up", "content": "x", "analysis_type": "classification"}},
                expect="labels",
            ),
            Probe(
                "extraction without a schema",
                {"json": {"model": "up", "content": "x", "analysis_type": "extraction"}},
                expect="schema",
            ),
            Probe(
                "extraction with a bad schema",
                {"json": {"model": "up", "content": "x", "analysis_type": "extraction", "schema": {"type": "nope"}}},
                expect="schema",
            ),
        ],
        "POST /v1/chat/completions": [
            Probe(
                "json_schema without a schema",
                {
                    "json": {
                        "model": "up",
                        "messages": [{"role": "user", "content": "Hi"}],
                        "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
                    }
                },
                expect="response_format.json_schema.schema",
            ),
            Probe(
                "max_tokens above the model's",
                {"json": {"model": "up", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 513}},
                expect="max_tokens",
            ),
            Probe(
                "the provider refuses",
                {"json": {"model": "up", "messages": [{"role": "user", "content": "Hi"}]}},
                before=refuse,
            ),
        ],
        "POST /v1/completions": [
            Probe("over the context window", {"json": {"model": "tiny", "prompt": "word " * 60}}, expect="prompt"),
        ],
        "POST /v1/embeddings": [
            Probe("a model that cannot embed", {"json": {"model": "up", "input": "Hi"}}, expect="model"),
        ],
    }


# --- the test ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream(("fake-model", "fake-embed")).start()
    yield server
    server.stop()


def _model(upstream: FakeUpstream, model_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": upstream.base_url,
        "model_id": model_id,
        "api_key": "sk-test",
        "context_window": 4096,
        "max_output_tokens": 512,
        **extra,
    }


async def _world(h: Harness, upstream: FakeUpstream) -> World:
    created = await h.client.post("/api/context", headers=ADMIN, json={"type": "note", "content": "hello"})
    assert created.status_code == 201, created.text
    for body in ({"name": "three", "dimensions": 3}, {"name": "embedded", "dimensions": 4, "model": "embedder"}):
        response = await h.client.post("/api/v1/db/vectors/collections", headers=ADMIN, json=body)
        assert response.status_code == 201, response.text
    viewer_id = await h.create_user("viewer", Role.VIEWER)
    return World(created.json()["data"]["id"], viewer_id, upstream)


async def test_every_400_has_one_shape(make_harness: Callable[..., Any], upstream: FakeUpstream) -> None:
    upstream.reset()
    models = {
        "up": _model(upstream, "fake-model"),
        "tiny": _model(upstream, "fake-model", context_window=64, max_output_tokens=32),
        "embedder": _model(upstream, "fake-embed", capabilities=["embed"], max_output_tokens=1),
    }
    async with make_harness(models=models, rate_limit_enabled=False) as h:
        routes = {route.key: route for route in api_routes(h.app)}
        findings = Findings()
        world = await _world(h, upstream)

        # Domain probes first (they need the world intact), then the generic ones.
        probes = domain_probes(world)
        assert set(probes) <= set(routes), f"probes for routes the app lacks: {sorted(set(probes) - set(routes))}"
        wrong_status = []
        for key, route_probes in probes.items():
            for probe in route_probes:
                if probe.before is not None:
                    probe.before()
                response = await findings.send(
                    h,
                    routes[key],
                    probe.kind,
                    path=probe.path,
                    headers=probe.headers,
                    expect_field=probe.expect,
                    expect_location=probe.location,
                    **probe.request,
                )
                if response.status_code != 400:
                    wrong_status.append(f"{key} [{probe.kind}]: {response.status_code} {response.text[:300]}")
        for route in routes.values():
            await generic_probes(h, findings, route)

    # The walk really happened: every route with parameters or a body was probed, every JSON body
    # got malformed JSON (and answered 400), and the routes with domain checks were all reached.
    assert len(routes) >= MIN_ROUTES, sorted(routes)
    probeable = {key for key, route in routes.items() if route.probeable}
    assert probeable <= findings.visited, sorted(probeable - findings.visited)
    json_bodies = {key for key, route in routes.items() if route.json_body is not None}
    assert len(json_bodies) >= MIN_JSON_BODY_ROUTES, sorted(json_bodies)
    assert findings.malformed_json == json_bodies, sorted(json_bodies ^ findings.malformed_json)
    assert wrong_status == [], "\n".join(wrong_status)
    assert set(probes) <= set(findings.rejected)
    assert len(findings.rejected) >= MIN_REJECTING_ROUTES, findings.rejected
    assert sum(findings.rejected.values()) >= MIN_REJECTIONS, findings.rejected

    report = "\n".join(f"{key}:\n    " + "\n    ".join(problems) for key, problems in sorted(findings.problems.items()))
    assert findings.problems == {}, f"{len(findings.problems)} routes answer 400s of another shape:\n{report}"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"field": "a", "message": "m", "location": "body"}, "lacks"),
        ({"field": "a", "message": "m", "location": "body", "type": "value_error", "ctx": {}}, "unexpected"),
        ({"field": "a", "message": "", "location": "body", "type": "value_error"}, "empty message"),
        ({"field": "a", "message": "m", "location": "nowhere", "type": "value_error"}, "location"),
        ({"field": "a", "message": "m", "location": "body", "type": "Value Error"}, "machine-readable"),
        ({"field": 1, "message": "m", "location": "body", "type": "value_error"}, "not a string"),
        ({"field": "", "message": "m", "location": "body", "type": "value_error", "position": 3}, "position"),
    ],
)
def test_the_shape_check_catches_what_it_should(entry: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in _field_problems(entry)), list(_field_problems(entry))


def test_the_shape_check_accepts_the_shape() -> None:
    good = {"field": "", "message": "Expecting value", "location": "body", "type": "json_invalid", "position": 9}
    assert list(_field_problems(good)) == []
