"""The OpenAPI document against the app: schemathesis sends every operation generated requests and
fails on any 5xx, any status code the operation does not document, and any response (body, content
type, headers) that does not match what the document says.

Each generated request goes twice: with the bootstrap admin's API key and with a developer's. The
models are served by a fake OpenAI-compatible upstream (``tests/gateway/upstream.py``), never the
local llama.cpp model, so the model-calling routes answer in milliseconds. Generation is bounded
(``MAX_EXAMPLES`` per operation and phase) and deterministic (derandomized), so a run is repeatable.

Schemathesis drives the ASGI app on its own event loop (one portal thread, where it also runs the
app's lifespan), so the app cannot be the harness's, which lives on the test's loop: the database is
prepared first by a runtime of its own (migrated, admin bootstrapped, a developer and key created),
then closed, and the app under test opens the same database, as ``trellis serve`` does.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from tests.conftest import ADMIN_KEY, JWT_SECRET
from tests.gateway.upstream import FakeUpstream, Ok
from trellis.app import create_app
from trellis.auth.schemas import ApiKeyCreate, UserCreate
from trellis.settings import Role, Settings
from trellis.settings.gateway import DEFAULT_CHAT_MODEL, DEFAULT_EMBED_MODEL
from trellis.storage import migrate

MAX_EXAMPLES = 12
# Checks left out, on purpose: both ask that the schema decide acceptance alone, and for this API it
# cannot. positive_data_acceptance wants every schema-valid request accepted, but a valid model name
# may be unconfigured, a valid cursor string forged, a valid vector of the wrong dimension for its
# collection: those are 400s (documented). negative_data_rejection wants every schema-violating
# request refused, and counts a request refused for another reason first as accepted. Every other
# check runs: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance, response_headers_conformance, allow_header_conformance,
# unsupported_method, missing_required_header, ignored_auth, use_after_free, ...
EXCLUDED_CHECKS = ["positive_data_acceptance", "negative_data_rejection"]


class JsonUpstream(FakeUpstream):
    """Chat answers are the JSON text ``{}``: it is valid for POST /api/v1/ai/analyze (whose answers
    must be JSON, or they are a 502) and as good as any text for every other route."""

    def _next(self, endpoint: Any) -> Any:
        behaviour = super()._next(endpoint)
        return Ok(text="{}") if isinstance(behaviour, Ok) and endpoint == "chat" else behaviour


def _model(upstream: FakeUpstream, model_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": upstream.base_url,
        "model_id": model_id,
        "api_key": "sk-test",
        "connect_timeout_seconds": 1.0,
        "read_timeout_seconds": 5.0,
        **extra,
    }


def contract_settings(data_dir: Path, upstream: FakeUpstream) -> Settings:
    return Settings(
        data_dir=data_dir,
        jwt_secret=JWT_SECRET,
        bootstrap_admin_key=ADMIN_KEY,
        log_json=True,
        # Generated requests come fast; limits would turn most of them into 429s (documented, but
        # they would hide what the routes behind the guard answer).
        rate_limit_enabled=False,
        # The built-in names, served by the fake upstream: the chat model and the embedding model.
        models={
            DEFAULT_CHAT_MODEL: _model(
                upstream,
                "fake-model",
                capabilities=["chat", "code", "json"],
                context_window=4096,
                max_output_tokens=512,
                aliases=["cursor-native-ai", "external-model", "specialized-agent"],
            ),
            DEFAULT_EMBED_MODEL: _model(
                upstream, "fake-embed", capabilities=["embed"], context_window=4096, max_output_tokens=1
            ),
        },
        # The fake answers at once; no backoff waits stretch a failing call.
        gateway={"max_attempts": 1},
    )


async def _prepare(settings: Settings) -> str:
    """Migrates the database and bootstraps the admin; returns a new developer's API key."""
    app = create_app(settings)
    runtime = app.state.runtime
    await migrate.upgrade(runtime.database)
    await runtime.auth.bootstrap_admin()
    async with app.router.lifespan_context(app):
        admin = await runtime.auth.authenticate_api_key(ADMIN_KEY)
        user = await runtime.auth.create_user(admin, UserCreate(username="dev", role=Role.DEVELOPER))
        _, key = await runtime.auth.create_key(admin, ApiKeyCreate(name="contract", user_id=user.id))
    return str(key)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """Settings of a prepared database (models on a running fake upstream), and a developer's key."""
    upstream = JsonUpstream(("fake-model", "fake-embed")).start()
    # As tests/conftest.py's _isolated_environment does, for the whole module.
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("TRELLIS_") and not name.startswith("TRELLIS_TEST_"):
                env.delenv(name)
        env.setenv("TRELLIS_CONFIG", str(tmp_path_factory.mktemp("config") / "absent.toml"))
        try:
            settings = contract_settings(tmp_path_factory.mktemp("contract"), upstream)
            yield settings, asyncio.run(_prepare(settings))
        finally:
            upstream.stop()


def _model_missed_schema(label: str | None, interaction: Any) -> bool:
    """POST /api/v1/ai/analyze answers 502 (documented) when the model's JSON does not match the JSON
    schema the request gave; no fake model matches every generated schema. Any other 5xx fails."""
    if label != "POST /api/v1/ai/analyze" or interaction is None or interaction.response is None:
        return False
    response = interaction.response
    if response.status_code != 502:
        return False
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(error.get("code") == "upstream_error" and "does not match the schema" in error.get("message", ""))


def run_schemathesis(settings: Settings, users: dict[str, str]) -> list[str]:
    """Every operation and check as each user (fuzzing as the admin only: see below); the failures."""
    from schemathesis.engine import Status, events, from_schema
    from schemathesis.python import asgi

    app = create_app(settings)
    failures: list[str] = []
    try:
        for user, key in users.items():
            schema = schemathesis.openapi.from_asgi("/openapi.json", app)
            schema.config.update(headers={"Authorization": f"Bearer {key}"})
            schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
            # Fuzzing as the admin, who may call everything; the developer's run keeps the examples and
            # the coverage phase (boundaries, missing and wrong-typed fields, refusals of admin routes):
            # fuzzing again as a second user found nothing the first did not and doubled the test's time.
            phases = ["examples", "coverage", "fuzzing"] if user == "admin" else ["examples", "coverage"]
            schema.config.phases.update(phases=phases)
            schema.config.checks.update(excluded_check_names=EXCLUDED_CHECKS)
            for event in from_schema(schema).execute():
                if isinstance(event, events.ScenarioFinished) and event.status in (Status.FAILURE, Status.ERROR):
                    for case_id, checks in event.recorder.checks.items():
                        for check in checks:
                            if check.status == Status.FAILURE and check.failure_info is not None:
                                failure = check.failure_info.failure
                                request = event.recorder.interactions.get(case_id)
                                if check.name == "not_a_server_error" and _model_missed_schema(event.label, request):
                                    continue
                                sent = f"{request.request.method} {request.request.uri}" if request else "?"
                                failures.append(
                                    f"[{user}] {event.label} {check.name}: {failure.title}: "
                                    f"{failure.message[:300]} (sent {sent})"
                                )
                    for error in getattr(event.recorder, "errors", []) or []:
                        failures.append(f"[{user}] {event.label} error: {error}")
                elif isinstance(event, events.NonFatalError | events.FatalError):
                    failures.append(f"[{user}] engine error: {getattr(event, 'info', None) or event}")
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan, which schemathesis started
    return sorted(set(failures))


def test_every_operation_answers_as_documented(api: tuple[Settings, str]) -> None:
    settings, developer_key = api
    failures = run_schemathesis(settings, {"admin": ADMIN_KEY, "developer": developer_key})
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
