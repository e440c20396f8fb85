"""SecretBox (kit/secretbox.py): secrets at rest under rotatable Fernet keys."""

from __future__ import annotations

import pytest

from trellis.kit.errors import InternalError, TrellisError
from trellis.kit.secretbox import SecretBox, SecretUnreadable


def test_round_trip() -> None:
    box = SecretBox([SecretBox.generate_key()])
    for secret in ["n8n_api_key_0123456789", "", "päss wörd ✓"]:
        token = box.encrypt(secret)
        assert secret not in token or not secret
        assert box.decrypt(token) == secret


def test_tokens_differ_for_the_same_plaintext() -> None:
    box = SecretBox([SecretBox.generate_key()])
    first, second = box.encrypt("same"), box.encrypt("same")
    assert first != second
    assert box.decrypt(first) == box.decrypt(second) == "same"


def test_rotation_old_tokens_stay_readable_and_new_ones_use_the_new_key() -> None:
    old_key, new_key = SecretBox.generate_key(), SecretBox.generate_key()
    old_token = SecretBox([old_key]).encrypt("hook-secret")

    rotated = SecretBox([new_key, old_key])
    assert rotated.decrypt(old_token) == "hook-secret"

    new_token = rotated.encrypt("hook-secret")
    assert SecretBox([new_key]).decrypt(new_token) == "hook-secret"  # the first key encrypts
    with pytest.raises(SecretUnreadable):
        SecretBox([old_key]).decrypt(new_token)

    # rotate(): re-encrypted under the first key, so the old key can then be dropped.
    assert SecretBox([new_key]).decrypt(rotated.rotate(old_token)) == "hook-secret"


def test_wrong_key_raises_a_500_with_a_clear_message() -> None:
    token = SecretBox([SecretBox.generate_key()]).encrypt("secret")
    with pytest.raises(SecretUnreadable) as caught:
        SecretBox([SecretBox.generate_key()]).decrypt(token)
    error = caught.value
    assert isinstance(error, InternalError)
    assert isinstance(error, TrellisError)
    assert error.status_code == 500
    assert error.code == "internal_error"
    assert error.message == "stored secret cannot be decrypted with the configured keys"


@pytest.mark.parametrize("token", ["", "not a token", "gAAAAA", "ünïcode"])
def test_garbage_tokens_raise_secret_unreadable(token: str) -> None:
    box = SecretBox([SecretBox.generate_key()])
    with pytest.raises(SecretUnreadable):
        box.decrypt(token)


def test_bad_keys_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        SecretBox([])
    with pytest.raises(TypeError):
        SecretBox(SecretBox.generate_key())
    with pytest.raises(ValueError, match="key 1 is not a Fernet key") as caught:
        SecretBox([SecretBox.generate_key(), "too-short-secret"])
    assert "too-short-secret" not in str(caught.value)
