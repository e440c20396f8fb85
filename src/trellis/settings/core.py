"""The settings object: where values come from and how they are checked together.

Values come, highest priority first, from keyword arguments (tests), ``TRELLIS_*`` environment
variables, and an optional TOML file (``trellis.toml`` in the working directory, or the path in
``TRELLIS_CONFIG``). Embedded defaults need no configuration at all: a data directory holding a
SQLite database, and in-process cache, limiter and bus.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from trellis.settings.alerts import AlertsSettings
from trellis.settings.auth import RateRule, Role, RouteClass, default_rate_limits
from trellis.settings.context import ContextSettings
from trellis.settings.dashboard import DashboardSettings
from trellis.settings.dspy import DSPySettings
from trellis.settings.events import EventsSettings
from trellis.settings.gateway import GatewaySettings, ModelConfig, default_models
from trellis.settings.graphql import GraphQLSettings
from trellis.settings.metrics import MetricsSettings
from trellis.settings.workflow import WorkflowSettings
from trellis.settings.ws import WsSettings

MIN_SECRET_BYTES = 32


def default_data_dir() -> Path:
    """Where an embedded Trellis keeps its database, secrets and saved admin key."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "trellis"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRELLIS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # Where embedded state lives; printed at start.
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default is a SQLite file in the data directory.",
    )
    redis_url: str | None = Field(default=None, description="Turns on Redis-backed parts.")
    # Every Redis key Trellis writes starts with this, so one Redis can serve several deployments.
    redis_key_prefix: str = "trellis:"
    redis_timeout_seconds: Annotated[float, Field(gt=0, le=10)] = 0.25
    # Connections to Redis per process; a command beyond them fails as if Redis were down (the rate
    # limiter then fails open or closed as set), so this bounds a burst's concurrency, not its size.
    redis_max_connections: Annotated[int, Field(ge=1, le=10_000)] = 1000
    # On PostgreSQL without Redis, each process LISTENs for "access was taken away" notifications so
    # it can cache credentials (trellis.auth.cache.PostgresAuthEpoch), and for "the embedding model
    # changed" (trellis.context.index.state). LISTEN needs a session of its own: behind PgBouncer in
    # transaction mode turn this off (then every request reads the database) or set redis_url.
    auth_cache_listen: bool = True

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    log_level: str = "INFO"
    # The garbage collector's youngest-generation threshold in `trellis serve` and `trellis worker`
    # (CPython's default, 700, made a server with many connections pause for full collections:
    # trellis.kit.heap says what was measured).
    gc_young_threshold: Annotated[int, Field(ge=700, le=1_000_000)] = 20_000
    # JSON lines (for log collectors) or human-readable; unset: human-readable when stderr is a terminal.
    log_json: bool | None = None

    # Requests whose body is larger than this are answered 413 without being read further.
    max_body_bytes: Annotated[int, Field(gt=0)] = 1_048_576

    # JWT: HS256 by default, 24 h lifetime like the seed.
    jwt_secret: SecretStr | None = None
    jwt_algorithm: str = "HS256"
    jwt_issuer: str = "trellis"
    jwt_audience: str = "trellis-api"
    jwt_ttl_seconds: Annotated[int, Field(gt=0, le=30 * 86_400)] = 86_400

    bootstrap_admin_username: str = "admin"
    bootstrap_admin_key: SecretStr | None = None
    bootstrap_admin_password: SecretStr | None = None

    rate_limit_enabled: bool = True
    rate_limits: dict[Role, dict[RouteClass, RateRule]] = Field(default_factory=default_rate_limits)
    # Login has its own, stricter budgets: one per client address and one per username, both spent
    # by every attempt (so neither rotating addresses nor rotating usernames gets more guesses).
    login_rate_limit: RateRule = RateRule(capacity=10, period_seconds=60)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or CIDR ranges, or
    # "*"). Empty (the default): the client address is the TCP peer's, whatever headers say.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Browser origins allowed to call the API cross-origin (CORS), e.g. ["http://localhost:5173"].
    # Empty (the default): no CORS headers, preflights are not answered.
    cors_origins: list[str] = Field(default_factory=list)
    # When the Redis limiter cannot answer in time: let the request through (open) or refuse (closed).
    rate_limit_fail_open: bool = True

    # Models by name (``[models.NAME]`` in trellis.toml). They replace the built-in defaults of the
    # same name; set include_default_models = false to drop the built-ins entirely.
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    include_default_models: bool = True
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    context: ContextSettings = Field(default_factory=ContextSettings)
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    ws: WsSettings = Field(default_factory=WsSettings)
    graphql: GraphQLSettings = Field(default_factory=GraphQLSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    dspy: DSPySettings = Field(default_factory=DSPySettings)

    def all_models(self) -> dict[str, ModelConfig]:
        models = default_models() if self.include_default_models else {}
        models.update(self.models)
        return models

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        allowed = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
        if not value.startswith(allowed):
            raise ValueError(f"must start with one of {', '.join(allowed)}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("jwt_secret", "bootstrap_admin_key")
    @classmethod
    def _check_secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes long")
        return value

    @field_validator("jwt_algorithm")
    @classmethod
    def _check_algorithm(cls, value: str) -> str:
        if value not in {"HS256", "HS384", "HS512"}:
            raise ValueError("must be one of HS256, HS384, HS512")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @model_validator(mode="after")
    def _check_secret_fits_algorithm(self) -> Settings:
        # RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
        needed = {"HS256": 32, "HS384": 48, "HS512": 64}[self.jwt_algorithm]
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value().encode()) < needed:
            raise ValueError(f"TRELLIS_JWT_SECRET must be at least {needed} bytes for {self.jwt_algorithm}")
        return self

    @model_validator(mode="after")
    def _fill_rate_limits(self) -> Settings:
        # A partial override (one role, one class) keeps the defaults for the rest.
        defaults = default_rate_limits()
        for role, classes in defaults.items():
            merged = {**classes, **self.rate_limits.get(role, {})}
            self.rate_limits[role] = merged
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'trellis.db'}"

    @property
    def embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_path = Path(os.environ.get("TRELLIS_CONFIG", "trellis.toml"))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path)
        return (init_settings, env_settings, toml)


class SettingsError(Exception):
    """Raised with a readable message naming each bad setting."""


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation failures into one message a person can act on."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if error["loc"]:
                name = "TRELLIS_" + "__".join(str(part) for part in error["loc"]).upper()
                lines.append(f"  {name}: {error['msg']}")
            else:  # a rule across settings; its message names them
                lines.append(f"  {error['msg']}")
        raise SettingsError("Invalid settings:\n" + "\n".join(lines)) from None
