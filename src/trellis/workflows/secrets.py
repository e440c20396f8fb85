"""The keys that encrypt n8n API keys and hook secrets at rest (``trellis.kit.secretbox``).

From ``[workflow] secret_keys`` (newest first); on an embedded deployment without them, a key file
in the data directory made on first start (mode 0600), like the JWT secret. Processes sharing a
non-embedded database must share keys, so there the setting is required.
"""

from __future__ import annotations

from trellis.auth.secrets import read_private_file, write_private_file
from trellis.kit.secretbox import SecretBox
from trellis.settings import Settings, SettingsError

SECRET_KEY_FILE = "workflow_secret.key"  # noqa: S105 - a file name


def build_secret_box(settings: Settings) -> SecretBox:
    keys = [key.get_secret_value() for key in settings.workflow.secret_keys]
    if not keys:
        if not settings.embedded_database:
            raise SettingsError(
                "Invalid settings:\n  TRELLIS_WORKFLOW__SECRET_KEYS: required when the database is not embedded "
                '(a JSON list of Fernet keys, e.g. ["<key>"]; make one with '
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            )
        path = settings.data_dir / SECRET_KEY_FILE
        write_private_file(path, SecretBox.generate_key())
        keys = [read_private_file(path) or ""]
    try:
        return SecretBox(keys)
    except ValueError as exc:
        raise SettingsError(f"Invalid settings:\n  TRELLIS_WORKFLOW__SECRET_KEYS: {exc}") from None
