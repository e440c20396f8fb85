"""Secrets kept in the data directory: the JWT signing secret and the bootstrap admin key file.

Files are created with mode 0600 atomically (``O_EXCL``), so a concurrent start cannot leave
two different secrets behind or a world-readable file for a moment.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from trellis.settings import MIN_SECRET_BYTES, Settings, SettingsError

JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name
ADMIN_KEY_FILE = "admin.key"


def write_private_file(path: Path, content: str) -> bool:
    """Create ``path`` readable only by its owner. Returns False if it already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")
    return True


def read_private_file(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def resolve_jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if not settings.embedded_database:
        raise SettingsError(
            "Invalid settings:\n  TRELLIS_JWT_SECRET: required (at least "
            f"{MIN_SECRET_BYTES} bytes) when the database is not embedded"
        )
    path = settings.data_dir / JWT_SECRET_FILE
    write_private_file(path, secrets.token_urlsafe(48))
    secret = read_private_file(path) or ""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"Invalid settings:\n  {path}: the saved JWT secret is shorter than {MIN_SECRET_BYTES} bytes"
        )
    return secret
