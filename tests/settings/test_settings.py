"""Settings: embedded defaults, environment and TOML sources, and readable refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from trellis.settings import Role, RouteClass, SettingsError, load_settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.data_dir == tmp_path / "trellis"
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'trellis' / 'trellis.db'}"
    assert settings.embedded_database
    assert settings.redis_url is None
    assert settings.jwt_ttl_seconds == 86_400
    assert settings.jwt_algorithm == "HS256"


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_DATABASE_URL", "postgresql+asyncpg://u@db/trellis")
    monkeypatch.setenv("TRELLIS_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("TRELLIS_PORT", "9000")
    monkeypatch.setenv("TRELLIS_RATE_LIMITS", '{"viewer": {"ai": {"capacity": 5, "period_seconds": 10}}}')
    settings = load_settings()
    assert not settings.embedded_database
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.port == 9000
    assert settings.rate_limits[Role.VIEWER][RouteClass.AI].capacity == 5
    # A partial override keeps the other defaults.
    assert settings.rate_limits[Role.VIEWER][RouteClass.DEFAULT].capacity == 300
    assert settings.rate_limits[Role.ADMIN][RouteClass.AI].capacity == 300


def test_toml_file_and_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "trellis.toml"
    config.write_text(
        'port = 7000\nhost = "0.0.0.0"\n[rate_limits.developer.default]\ncapacity = 9\nperiod_seconds = 1\n'
    )
    monkeypatch.setenv("TRELLIS_CONFIG", str(config))
    monkeypatch.setenv("TRELLIS_PORT", "7001")
    settings = load_settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 7001  # environment beats the file
    assert settings.rate_limits[Role.DEVELOPER][RouteClass.DEFAULT].capacity == 9


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("TRELLIS_PORT", "not-a-port", "TRELLIS_PORT"),
        ("TRELLIS_PORT", "70000", "TRELLIS_PORT"),
        ("TRELLIS_DATABASE_URL", "mysql://x/y", "TRELLIS_DATABASE_URL: Value error, must start with"),
        ("TRELLIS_REDIS_URL", "http://x", "TRELLIS_REDIS_URL"),
        ("TRELLIS_JWT_SECRET", "too-short", "TRELLIS_JWT_SECRET: Value error, must be at least 32 bytes"),
        ("TRELLIS_JWT_ALGORITHM", "none", "TRELLIS_JWT_ALGORITHM"),
        ("TRELLIS_LOG_LEVEL", "loud", "TRELLIS_LOG_LEVEL"),
        ("TRELLIS_MAX_BODY_BYTES", "0", "TRELLIS_MAX_BODY_BYTES"),
        ("TRELLIS_RATE_LIMITS", '{"admin": {"default": {"capacity": 0, "period_seconds": 1}}}', "TRELLIS_RATE_LIMITS"),
        ("TRELLIS_RATE_LIMITS", '{"emperor": {}}', "TRELLIS_RATE_LIMITS"),
        ("TRELLIS_NO_SUCH_SETTING", "1", None),
    ],
)
def test_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str | None) -> None:
    monkeypatch.setenv(name, value)
    if fragment is None:
        # Unknown environment variables are ignored (only TOML keys are checked strictly).
        load_settings()
        return
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert fragment in str(caught.value)


def test_unknown_key_in_toml_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "trellis.toml"
    config.write_text("prot = 8000\n")
    monkeypatch.setenv("TRELLIS_CONFIG", str(config))
    with pytest.raises(SettingsError, match="TRELLIS_PROT"):
        load_settings()


def test_secret_length_follows_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_JWT_ALGORITHM", "HS512")
    monkeypatch.setenv("TRELLIS_JWT_SECRET", "x" * 40)
    with pytest.raises(SettingsError, match="TRELLIS_JWT_SECRET must be at least 64 bytes for HS512"):
        load_settings()
    monkeypatch.setenv("TRELLIS_JWT_SECRET", "x" * 64)
    assert load_settings().jwt_algorithm == "HS512"


def test_data_directory_is_private(tmp_path: Path) -> None:
    from trellis.runtime import build_runtime

    data_dir = tmp_path / "fresh" / "data"
    build_runtime(load_settings(data_dir=data_dir))
    assert data_dir.stat().st_mode & 0o777 == 0o700
