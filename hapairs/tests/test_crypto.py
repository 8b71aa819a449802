"""Secrets at rest: MultiFernet with rotatable keys."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from hapairs import crypto


def test_round_trip_and_ciphertext_hides_the_plaintext(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    token = crypto.encrypt("admin-password")
    assert "admin-password" not in token
    assert crypto.decrypt(token) == "admin-password"


def test_rotation_keeps_old_tokens_readable_and_rotate_moves_them_to_the_new_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    token = crypto.encrypt("pw")
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    assert crypto.decrypt(token) == "pw"
    rotated = crypto.rotate(token)
    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(rotated) == "pw"
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(token)


def test_a_changed_secret_key_without_fallback_cannot_read_and_says_why(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    token = crypto.encrypt("pw")
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    with pytest.raises(crypto.SecretUnreadable, match="cannot be decrypted"):
        crypto.decrypt(token)
    settings.SECRET_KEY_FALLBACKS = ["dev-only-insecure-secret-key-do-not-use-in-production-0123456789"]
    assert crypto.decrypt(token) == "pw"


def test_a_malformed_key_is_a_configuration_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="not a Fernet key"):
        crypto.encrypt("pw")
