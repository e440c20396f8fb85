"""No plaintext API key (or password, or JWT) is kept in the database or written to the logs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
from sqlalchemy import inspect

from tests.auth.support import assert_ok
from tests.conftest import ADMIN_KEY, Harness
from trellis.kit.logging import REDACTED, configure_logging, get_logger, redact_secrets
from trellis.settings import Role
from trellis.storage.database import Database

PASSWORD = "correct horse battery staple"
ADMIN = Harness.auth(ADMIN_KEY)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def dump_database(database: Database) -> dict[str, list[str]]:
    """Every row of every table the database holds (not just the ones the models know), as text."""
    async with database.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        dump: dict[str, list[str]] = {}
        for table in tables:
            result = await conn.exec_driver_sql(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the catalog
            dump[table] = [" | ".join(str(value) for value in row) for row in result]
    return dump


async def test_database_holds_only_hashes(make_harness: Callable[..., Any], database_url: str) -> None:
    async with make_harness(database_url=database_url) as h:
        user_id = await h.create_user("sara", Role.DEVELOPER, password=PASSWORD)
        own = assert_ok(await h.client.post("/api/v1/keys", headers=ADMIN, json={"name": "own"}), 201)["key"]
        for_user = assert_ok(
            await h.client.post(
                "/api/v1/keys", headers=ADMIN, json={"name": "sara's", "user_id": user_id, "scopes": ["read"]}
            ),
            201,
        )["key"]
        minted = assert_ok(
            await h.client.post("/api/v1/keys", headers=h.auth(own), json={"name": "m"}),
            201,
        )["key"]
        token = assert_ok(await h.client.post("/api/v1/auth/token", json={"username": "sara", "password": PASSWORD}))[
            "access_token"
        ]
        for credential in (own, for_user, minted, ADMIN_KEY, token):
            assert_ok(await h.client.get("/api/v1/auth/me", headers=h.auth(credential)))
        assert_ok(await h.client.get("/api/v1/auth/me", headers={"X-API-Key": for_user}))

        dump = await dump_database(h.runtime.database)

    assert {"users", "api_keys", "alembic_version"} <= set(dump)
    assert len(dump["api_keys"]) == 4
    everything = "\n".join(line for rows in dump.values() for line in rows)
    for secret in (own, for_user, minted, ADMIN_KEY, PASSWORD, token):
        assert secret not in everything
    for key in (own, for_user, minted, ADMIN_KEY):
        assert _sha256(key) in "\n".join(dump["api_keys"])
        # Only the short display prefix of the key is kept in the clear.
        assert key[:12] in everything
        assert key[:20] not in everything
    assert "$argon2id$" in "\n".join(dump["users"])


@contextmanager
def structured_logging(level: str = "DEBUG") -> Iterator[None]:
    """``configure_logging`` for one test, then the previous logging and structlog setup back."""
    root = logging.getLogger()
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic.runtime.migration", "sqlalchemy.engine")
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).propagate,
            logging.getLogger(name).disabled,
            logging.getLogger(name).level,
        )
        for name in names
    }
    saved_root = (root.handlers[:], root.level)
    saved_structlog = structlog.get_config()
    configure_logging(level, json_output=True)
    # SQL statements and their parameters too: the strictest place a key could leak from.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:], level_before = saved_root
        root.setLevel(level_before)
        for name, (handlers, propagate, disabled, lvl) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled
            logger.setLevel(lvl)
        structlog.configure(**saved_structlog)


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


async def test_logs_never_carry_keys_or_tokens(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h = harness
    user_id = await h.create_user("tom", Role.DEVELOPER, password=PASSWORD)
    capsys.readouterr()

    with structured_logging("DEBUG"):
        created = await h.client.post(
            "/api/v1/keys", headers={**ADMIN, "X-Request-ID": "rid-create"}, json={"name": "t", "user_id": user_id}
        )
        key = assert_ok(created, 201)["key"]
        assert_ok(await h.client.get("/api/v1/auth/me", headers={**h.auth(key), "X-Request-ID": "rid-bearer"}))
        assert_ok(await h.client.get("/api/v1/auth/me", headers={"X-API-Key": key, "X-Request-ID": "rid-header"}))
        login = await h.client.post(
            "/api/v1/auth/token", json={"username": "tom", "password": PASSWORD}, headers={"X-Request-ID": "rid-login"}
        )
        token = assert_ok(login)["access_token"]
        assert_ok(await h.client.get("/api/v1/auth/me", headers={**h.auth(token), "X-Request-ID": "rid-jwt"}))
        # Refused credentials are not logged either.
        bad = key[:-4] + "AAAA"
        response = await h.client.get("/api/v1/auth/me", headers={**h.auth(bad), "X-Request-ID": "rid-bad"})
        assert response.status_code == 401
        # Application code that logs a secret by mistake gets it redacted too.
        get_logger("trellis.test").warning("oops", api_key=key, note=f"used {key} and {token}", password=PASSWORD)
        logging.getLogger("some.library").warning("header was Bearer %s / %s", key, token)
        stderr = capsys.readouterr().err

    for secret in (key, token, ADMIN_KEY, PASSWORD, bad):
        assert secret not in stderr
    lines = _json_lines(stderr)

    requests = {line["request_id"]: line for line in lines if line.get("event") == "request"}
    assert set(requests) == {"rid-create", "rid-bearer", "rid-header", "rid-login", "rid-jwt", "rid-bad"}
    assert requests["rid-bad"]["status"] == 401
    assert requests["rid-jwt"]["path"] == "/api/v1/auth/me"
    # SQL ran (and was logged with its parameters) inside the request, under its id.
    sql = [line for line in lines if line.get("logger", "").startswith("sqlalchemy.engine")]
    assert sql
    assert any(line.get("request_id") == "rid-bearer" for line in sql)
    assert any(_sha256(key) in json.dumps(line) for line in sql)

    oops = next(line for line in lines if line.get("event") == "oops")
    assert oops["api_key"] == REDACTED
    assert oops["password"] == REDACTED
    assert oops["note"] == f"used {REDACTED} and {REDACTED}"
    foreign = next(line for line in lines if line.get("logger") == "some.library")
    assert foreign["event"] == f"header was Bearer {REDACTED} / {REDACTED}"


# --- the redaction processor -----------------------------------------------------------------

KEY = "trl_AbCdEfGh-ijkl_mnop0123456789qrstuvwxyzABCDEFG"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _redact(event: dict[str, Any]) -> dict[str, Any]:
    return dict(redact_secrets(None, "info", dict(event)))


@pytest.mark.parametrize(
    "field",
    [
        "password",
        "new_password",
        "passwd",
        "pass",
        "secret",
        "jwt_secret",
        "token",
        "access_token",
        "api_key",
        "api-key",
        "apikey",
        "X-API-Key",
        "authorization",
        "Authorization",
        "cookie",
        "set-cookie",
        "key",
    ],
)
def test_secret_field_names_are_redacted(field: str) -> None:
    assert _redact({"event": "x", field: "plain value"})[field] == REDACTED


@pytest.mark.parametrize("field", ["key_id", "username", "path", "status", "request_id", "event", "monkey"])
def test_other_fields_are_kept(field: str) -> None:
    assert _redact({field: "plain value"})[field] == "plain value"


def test_secret_values_are_redacted_wherever_they_appear() -> None:
    event = {
        "event": f"authenticated with {KEY}",
        "header": f"Bearer {JWT}",
        "nested": {"deep": [f"x {KEY} y", ("t", JWT)], "Authorization": "Basic abc", "ok": "fine"},
        "count": 3,
        "flag": None,
    }
    out = _redact(event)
    assert out["event"] == f"authenticated with {REDACTED}"
    assert out["header"] == f"Bearer {REDACTED}"
    assert out["nested"] == {"deep": [f"x {REDACTED} y", ["t", REDACTED]], "Authorization": REDACTED, "ok": "fine"}
    assert out["count"] == 3
    assert out["flag"] is None
    assert KEY not in json.dumps(out)
    assert JWT not in json.dumps(out)


def test_values_that_only_resemble_secrets_are_kept() -> None:
    text = "key prefix trl_ab, route /api/v1/keys, version 1.2.3"
    assert _redact({"event": text})["event"] == text


def test_key_prefix_alone_is_redacted_conservatively() -> None:
    # The 12-character display prefix is also caught, so a truncated key never reaches a log line.
    assert _redact({"event": KEY[:12]})["event"] == REDACTED
