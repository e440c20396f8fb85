"""Short secrets encrypted at rest: n8n API keys, webhook secrets.

``SecretBox`` wraps ``cryptography.fernet.MultiFernet`` (AES-128-CBC + HMAC-SHA256, authenticated,
timestamped tokens). It is built from a list of keys: the first encrypts, every one decrypts, so a
key is rotated by putting a new one first and keeping the old ones until every stored token has
been re-encrypted (``rotate``). A token no configured key opens is ``SecretUnreadable``, a 500: the
operator's keys are wrong, not the client's request.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from trellis.kit.errors import InternalError


class SecretUnreadable(InternalError):
    """A stored secret that none of the configured keys decrypts (a 500 internal_error)."""

    default_message = "stored secret cannot be decrypted with the configured keys"


class SecretBox:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            raise TypeError("pass a list of keys, not one key")
        if not keys:
            raise ValueError("a SecretBox needs at least one key")
        fernets: list[Fernet] = []
        for position, key in enumerate(keys):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                # Never echo the key itself: it is the secret.
                raise ValueError(
                    f"key {position} is not a Fernet key (32 bytes, urlsafe base64); make one with "
                    "SecretBox.generate_key()"
                ) from None
        self._fernet = MultiFernet(fernets)

    @staticmethod
    def generate_key() -> str:
        """A new random key (urlsafe base64 of 32 bytes)."""
        return Fernet.generate_key().decode("ascii")

    def encrypt(self, plain: str) -> str:
        """A token for ``plain``, under the first key; a fresh one each call (random IV, timestamp)."""
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext of a token made with any configured key, else ``SecretUnreadable``."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable() from None

    def rotate(self, token: str) -> str:
        """The same secret re-encrypted under the first key (``SecretUnreadable`` if no key opens it)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable() from None
