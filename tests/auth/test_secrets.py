"""The JWT secret: too short refuses start-up; required off SQLite; generated once (0600) and reused on SQLite."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.auth.support import assert_ok
from tests.conftest import JWT_SECRET
from trellis.app import create_app
from trellis.auth.secrets import JWT_SECRET_FILE
from trellis.settings import MIN_SECRET_BYTES, Role, Settings, SettingsError, load_settings

PASSWORD = "correct horse battery staple"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("secret", ["x" * (MIN_SECRET_BYTES - 1), "short", "é" * 15 + "x"])
def test_short_secret_is_refused_by_settings(tmp_path: Path, secret: str) -> None:
    assert len(secret.encode()) < MIN_SECRET_BYTES
    with pytest.raises(ValidationError, match="jwt_secret"):
        Settings(data_dir=tmp_path, jwt_secret=secret)
    with pytest.raises(SettingsError, match="TRELLIS_JWT_SECRET") as info:
        load_settings(data_dir=tmp_path, jwt_secret=secret)
    assert f"at least {MIN_SECRET_BYTES} bytes" in str(info.value)
    assert secret not in str(info.value)


def test_short_secret_from_environment_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRELLIS_JWT_SECRET", "too-short-a-secret")
    with pytest.raises(SettingsError, match="TRELLIS_JWT_SECRET"):
        load_settings()


def test_secret_length_is_counted_in_bytes(tmp_path: Path) -> None:
    # 16 two-byte characters are 32 bytes: just enough. 31 ASCII bytes are not.
    assert Settings(data_dir=tmp_path, jwt_secret="é" * 16).jwt_secret is not None
    assert Settings(data_dir=tmp_path, jwt_secret="x" * MIN_SECRET_BYTES).jwt_secret is not None
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, jwt_secret="x" * (MIN_SECRET_BYTES - 1))


def test_short_bootstrap_admin_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TRELLIS_BOOTSTRAP_ADMIN_KEY"):
        load_settings(data_dir=tmp_path, jwt_secret=JWT_SECRET, bootstrap_admin_key="trl_short")


@pytest.mark.parametrize("algorithm", ["none", "RS256", "ES256", "hs256"])
def test_only_hmac_algorithms_are_accepted(tmp_path: Path, algorithm: str) -> None:
    with pytest.raises(SettingsError, match="TRELLIS_JWT_ALGORITHM"):
        load_settings(data_dir=tmp_path, jwt_secret=JWT_SECRET, jwt_algorithm=algorithm)


def test_short_secret_refuses_create_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``create_app()`` as uvicorn's factory calls it: settings from the environment."""
    monkeypatch.setenv("TRELLIS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRELLIS_JWT_SECRET", "x" * (MIN_SECRET_BYTES - 1))
    with pytest.raises(SettingsError, match="TRELLIS_JWT_SECRET"):
        create_app()
    assert not (tmp_path / "data" / JWT_SECRET_FILE).exists()


def test_postgresql_without_secret_refuses_create_app(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    # The check happens before anything connects, so no server is needed for it.
    settings = make_settings(jwt_secret=None, database_url="postgresql+asyncpg://trellis@127.0.0.1:1/trellis")
    assert not settings.embedded_database
    with pytest.raises(SettingsError, match="TRELLIS_JWT_SECRET"):
        create_app(settings)
    # No secret file is invented for a shared database: every instance must be given the same one.
    assert not (tmp_path / "data" / JWT_SECRET_FILE).exists()


async def test_embedded_secret_is_generated_private_and_reused(
    make_harness: Callable[..., Any], tmp_path: Path
) -> None:
    secret_file = tmp_path / "data" / JWT_SECRET_FILE
    assert not secret_file.exists()

    async with make_harness(jwt_secret=None) as first:
        assert secret_file.is_file()
        assert _mode(secret_file) == 0o600
        secret = secret_file.read_text().strip()
        assert len(secret.encode()) >= MIN_SECRET_BYTES
        assert secret != JWT_SECRET
        user_id = await first.create_user("hana", Role.VIEWER, password=PASSWORD)
        response = await first.client.post("/api/v1/auth/token", json={"username": "hana", "password": PASSWORD})
        token = assert_ok(response)["access_token"]
        assert assert_ok(await first.client.get("/api/v1/auth/me", headers=first.auth(token)))["id"] == user_id

    # Next start on the same data directory: same secret, so the token issued before still verifies.
    async with make_harness(jwt_secret=None) as second:
        assert secret_file.read_text().strip() == secret
        assert _mode(secret_file) == 0o600
        me = assert_ok(await second.client.get("/api/v1/auth/me", headers=second.auth(token)))
        assert me["id"] == user_id
        assert me["auth"] == "jwt"


async def test_embedded_secret_differs_per_data_directory(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Generated secrets are random, so reuse above is proof of reading the file, not of a constant."""
    secrets = []
    for name in ("one", "two"):
        app = create_app(make_settings(jwt_secret=None, data_dir=tmp_path / name))
        await app.state.runtime.close()
        secrets.append((tmp_path / name / JWT_SECRET_FILE).read_text().strip())
    assert secrets[0] != secrets[1]


def test_saved_secret_that_is_too_short_refuses_start(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / JWT_SECRET_FILE).write_text("tiny\n")
    with pytest.raises(SettingsError, match="shorter than"):
        create_app(make_settings(jwt_secret=None))


def test_configured_secret_wins_over_generation(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    create_app(make_settings())
    assert not (tmp_path / "data" / JWT_SECRET_FILE).exists()
