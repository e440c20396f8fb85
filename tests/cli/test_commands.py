"""The ``trellis`` command line, run in-process against a real embedded data directory."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from typer.testing import CliRunner, Result

from tests.conftest import bootstrap
from trellis import __version__
from trellis.auth.secrets import ADMIN_KEY_FILE, JWT_SECRET_FILE
from trellis.cli.common import prepare_embedded
from trellis.cli.main import app
from trellis.runtime import build_runtime
from trellis.settings import load_settings
from trellis.storage import migrate as migrations

PASSWORD = "correct horse battery staple"
TOKEN = "/api/v1/auth/token"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(path))
    monkeypatch.setenv("TRELLIS_CONFIG", str(tmp_path / "nonexistent.toml"))
    return path


def cli(*args: str, input: str | None = None) -> Result:
    # catch_exceptions=False: a traceback is a failure, never a "non-zero exit" that passes.
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def ok_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def flat(text: str) -> str:
    """Rich wraps long lines; compare messages with whitespace collapsed."""
    return " ".join(text.split())


def test_version(data_dir: Path) -> None:
    result = cli("version")
    assert result.exit_code == 0
    assert result.stdout.strip() == __version__


def test_migrate_is_idempotent(data_dir: Path) -> None:
    for _ in range(2):
        result = cli("migrate")
        assert result.exit_code == 0, result.output
        assert f"revision {migrations.head_revision()}" in flat(result.stdout)
    assert (data_dir / "trellis.db").is_file()
    # The embedded JWT secret is generated on the way, privately.
    assert stat.S_IMODE((data_dir / JWT_SECRET_FILE).stat().st_mode) == 0o600


def test_bootstrap_saves_admin_key_privately_once(data_dir: Path) -> None:
    key = bootstrap()
    saved = data_dir / ADMIN_KEY_FILE
    assert saved.read_text().strip() == key
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600

    async def again() -> str | None:
        runtime = build_runtime(load_settings())
        try:
            return await prepare_embedded(runtime)
        finally:
            await runtime.close()

    # A second start creates nothing and leaves the saved key alone.
    assert asyncio.run(again()) is None
    assert saved.read_text().strip() == key


def test_management_flow(data_dir: Path) -> None:
    admin_key = bootstrap()

    # The saved admin key is used by default.
    bob = ok_json("users", "create", "bob", "--role", "viewer", "--password", PASSWORD)
    assert bob["username"] == "bob"
    assert bob["role"] == "viewer"
    assert bob["disabled"] is False
    assert "password" not in json.dumps(bob)

    users = ok_json("users", "list")
    assert {u["username"] for u in users} == {"admin", "bob"}

    table = cli("users", "list")
    assert table.exit_code == 0
    assert "bob" in table.stdout

    created = cli("keys", "create", "--user", bob["id"], "--name", "bob-laptop", "--json")
    assert created.exit_code == 0, created.output
    key_out = json.loads(created.stdout)
    bob_key = key_out["key"]
    assert bob_key.startswith("trl_")
    assert created.output.count(bob_key) == 1
    assert key_out["owner_id"] == bob["id"]
    assert key_out["prefix"] == bob_key[:12]

    listing = cli("keys", "list", "--json")
    assert listing.exit_code == 0
    keys = json.loads(listing.stdout)
    assert {k["id"] for k in keys} >= {key_out["id"]}
    assert all("key" not in k for k in keys)
    assert bob_key not in listing.output
    assert admin_key not in listing.output

    # Bob's own key sees only Bob's keys (viewer: read-only).
    as_bob = cli("keys", "list", "--json", "--api-key", bob_key)
    assert as_bob.exit_code == 0, as_bob.output
    assert [k["id"] for k in json.loads(as_bob.stdout)] == [key_out["id"]]
    # ... and cannot administer users.
    denied = cli("users", "list", "--api-key", bob_key)
    assert denied.exit_code == 1
    assert "Administrator role required" in flat(denied.stderr)

    # A password login prints a JWT signed with the data directory's secret.
    token_result = cli("token", "bob", "--password", PASSWORD)
    assert token_result.exit_code == 0, token_result.output
    token = token_result.stdout.strip()
    secret = (data_dir / JWT_SECRET_FILE).read_text().strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="trellis-api", issuer="trellis")
    assert claims["sub"] == bob["id"]

    as_json = ok_json("token", "bob", "--password", PASSWORD)
    assert as_json["token_type"] == "bearer"

    prompted = cli("token", "bob", input=PASSWORD + "\n")
    assert prompted.exit_code == 0, prompted.output
    assert PASSWORD not in prompted.output

    wrong = cli("token", "bob", "--password", "wrong password")
    assert wrong.exit_code == 1
    assert "Invalid username or password" in flat(wrong.stderr)

    # Revoke: the key stops working on the next command.
    revoked = ok_json("keys", "revoke", key_out["id"])
    assert revoked["id"] == key_out["id"]
    assert revoked["revoked_at"] is not None
    after = cli("keys", "list", "--api-key", bob_key)
    assert after.exit_code == 1
    assert "revoked" in flat(after.stderr)

    # Disable: Bob can no longer log in; a new key of his is refused too.
    second = ok_json("keys", "create", "--user", bob["id"])["key"]
    disabled = ok_json("users", "disable", bob["id"])
    assert disabled["disabled"] is True
    refused = cli("token", "bob", "--password", PASSWORD)
    assert refused.exit_code == 1
    assert "Invalid username or password" in flat(refused.stderr)
    second_result = cli("keys", "list", "--api-key", second)
    assert second_result.exit_code == 1
    assert "disabled" in flat(second_result.stderr)


def test_explicit_api_key_wins_over_saved_one(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap()
    bob = ok_json("users", "create", "bob")
    bob_key = ok_json("keys", "create", "--user", bob["id"])["key"]
    monkeypatch.setenv("TRELLIS_API_KEY", bob_key)
    mine = ok_json("keys", "list")
    assert {k["owner_id"] for k in mine} == {bob["id"]}
    assert cli("users", "list").exit_code == 1


def test_readable_error_for_bad_username(data_dir: Path) -> None:
    bootstrap()
    result = cli("users", "create", "not valid!")
    assert result.exit_code == 1
    message = flat(result.stderr)
    assert "Error:" in message
    assert "username" in message
    assert "Traceback" not in result.output
    assert {u["username"] for u in ok_json("users", "list")} == {"admin"}


def test_readable_error_for_duplicate_username(data_dir: Path) -> None:
    bootstrap()
    ok_json("users", "create", "carol")
    result = cli("users", "create", "carol")
    assert result.exit_code == 1
    assert "Username already taken" in flat(result.stderr)


def test_readable_error_without_api_key(data_dir: Path) -> None:
    assert cli("migrate").exit_code == 0  # a database, but no admin key saved
    for args in (("users", "list"), ("keys", "list"), ("users", "create", "dave")):
        result = cli(*args)
        assert result.exit_code == 1
        message = flat(result.stderr)
        assert "no API key" in message
        assert "--api-key" in message
        assert "Traceback" not in result.output


def test_readable_error_for_unknown_api_key(data_dir: Path) -> None:
    bootstrap()
    result = cli("users", "list", "--api-key", "trl_unknown-key-0123456789abcdefghijklmnop")
    assert result.exit_code == 1
    assert "Invalid API key" in flat(result.stderr)


def test_readable_error_for_unknown_ids(data_dir: Path) -> None:
    bootstrap()
    result = cli("keys", "revoke", "key_nope")
    assert result.exit_code == 1
    assert "API key not found" in flat(result.stderr)
    result = cli("users", "disable", "usr_nope")
    assert result.exit_code == 1
    assert "User not found" in flat(result.stderr)


def test_usage_errors_exit_2(data_dir: Path) -> None:
    bootstrap()
    assert cli("users", "create", "erin", "--role", "superuser").exit_code == 2
    assert cli("keys", "create", "--expires-in-days", "0").exit_code == 2
    assert cli("keys", "create", "--scope", "root").exit_code == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["serve", "migrate", "version", "token", "users", "keys"]),
        (("users",), ["create", "list", "disable"]),
        (("keys",), ["create", "list", "revoke"]),
        (("users", "create"), ["--role", "--password", "--api-key", "--json"]),
        (("keys", "create"), ["--scope", "--expires-in-days", "--user"]),
        (("token",), ["--password"]),
        (("serve",), ["--host", "--port", "--workers"]),
    ],
)
def test_help(data_dir: Path, args: tuple[str, ...], expected: list[str]) -> None:
    result = cli(*args, "--help")
    assert result.exit_code == 0, result.output
    for word in expected:
        assert word in result.stdout


@pytest.mark.parametrize("args", [("migrate",), ("users", "list"), ("token", "bob", "--password", "x")])
def test_bad_setting_exits_2_naming_it(data_dir: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    monkeypatch.setenv("TRELLIS_PORT", "abc")
    result = cli(*args)
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "TRELLIS_PORT" in message
    assert "Invalid settings" in message
    assert not data_dir.exists()  # refused before touching anything


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(client: httpx.Client, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll /health while the server starts (migrations, the admin, the app); fail if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"trellis serve exited with {server.returncode}"
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("trellis serve did not answer /health in time")


def test_serve_ignores_forwarded_for_unless_the_proxy_is_trusted(data_dir: Path) -> None:
    """The probe's finding, on the real server: uvicorn believed X-Forwarded-For from 127.0.0.1 by
    default, so each spoofed address got fresh login attempts. `trellis serve` leaves forwarded
    headers to [trusted_proxies] (empty by default): the address is the TCP peer's."""
    env = {**os.environ, "TRELLIS_LOGIN_RATE_LIMIT": '{"capacity": 2, "period_seconds": 600}'}
    port = free_port()
    command = [sys.executable, "-m", "trellis", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_until_serving(client, server)
            # Two usernames, so only the address's budget (2) is spent, not a username's.
            for username in ("nobody1", "nobody2"):
                assert client.post(TOKEN, json={"username": username, "password": "x" * 8}).status_code == 401
            for n, address in enumerate(("10.0.0.1", "10.0.0.2")):
                body = {"username": f"other{n}", "password": "x" * 8}
                spoofed = client.post(TOKEN, json=body, headers={"X-Forwarded-For": address})
                assert spoofed.status_code == 429, spoofed.text
    finally:
        server.terminate()
        server.wait(timeout=30)
