"""Secrets at rest: appliance passwords encrypted with MultiFernet.

Keys come from ``settings.FIELD_ENCRYPTION_KEYS`` (Fernet keys; the first encrypts,
every key decrypts, so an operator rotates by putting a new key first and running
``manage.py rotate_secrets``). Without it, one key is derived from ``SECRET_KEY``
(and one per ``SECRET_KEY_FALLBACKS`` entry) with HKDF, so a default install is
still encrypted and rotating SECRET_KEY the Django way keeps old rows readable.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _derive_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"mseportal-field-encryption", info=b"v1")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode()))


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...], secret_keys: tuple[str, ...]) -> MultiFernet:
    if keys:
        try:
            return MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError:
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
            ) from None
    return MultiFernet([Fernet(_derive_key(secret)) for secret in secret_keys])


def _current() -> MultiFernet:
    return _fernet(
        tuple(settings.FIELD_ENCRYPTION_KEYS),
        (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS),
    )


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError):
        raise SecretUnreadable(
            "The stored password cannot be decrypted with the configured keys "
            "(was FIELD_ENCRYPTION_KEYS or SECRET_KEY changed without keeping the old key?)."
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the first (newest) key."""
    try:
        return _current().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise SecretUnreadable("The stored password cannot be decrypted with the configured keys.") from None
